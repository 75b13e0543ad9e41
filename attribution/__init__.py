"""Attribution manifests: build, sign and verify them. No Django: teams run the verifier offline."""
