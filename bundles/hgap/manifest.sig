{
 "signatures": [
  {
   "key_id": "613401efe73b59f9",
   "algorithm": "ed25519",
   "signature": "QnzeblHFiszDLTWlyVGBZUnYzPLVs0qWdjibGBiAPZPlhPW2TH4UW+8Zy2IZbmVy+jwkjn34jBODJ+oiDTPXBg=="
  }
 ]
}
