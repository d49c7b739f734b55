{
 "signatures": [
  {
   "key_id": "613401efe73b59f9",
   "algorithm": "ed25519",
   "signature": "h/SQF4hse8VsJqqUD5d6z8gKVcMUSYv4QA8cVxq8mcG1vGE59o+ypKTEHPha7PkOqV47K/QGJC88588AzKCuDg=="
  }
 ]
}
