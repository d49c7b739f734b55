{
 "signatures": [
  {
   "key_id": "613401efe73b59f9",
   "algorithm": "ed25519",
   "signature": "s846qqKtETe8wbCj+4uI/Y6ajd1kkf7myDWlmFw2xv/H2TeKagxyRJRMtZjbwxHI/fgHCclWsmSI0P+qSX4LDQ=="
  }
 ]
}
