{
 "signatures": [
  {
   "key_id": "613401efe73b59f9",
   "algorithm": "ed25519",
   "signature": "xb5rEkQy4/u1WHiHTJMwCeQ/b3FCKUbSgD0OEXyHMDrORw6BEf4svTfn3WtPsGjQxp2ZVimwIApSsTFDcruLDA=="
  }
 ]
}
