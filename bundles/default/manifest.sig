{
 "signatures": [
  {
   "key_id": "613401efe73b59f9",
   "algorithm": "ed25519",
   "signature": "MfOtJSy3BW1ouSZGXzQ9bUhjG/WfCM001yYsc/KKK/G5Hh7FQHqV/dYLyQEfAM+4LcMTRqj7KVi+Vf/N6hDdDQ=="
  }
 ]
}
