{
 "signatures": [
  {
   "key_id": "613401efe73b59f9",
   "algorithm": "ed25519",
   "signature": "gJDUvStnE+XHlEO7EDkXgwMhVY1ODrtKZy8PBNgJ/IvsQK79OH1y3iNddF0je0LBJOpDSrCrPZmQ8CM4Xi6aBA=="
  }
 ]
}
