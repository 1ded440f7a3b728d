{
  "targets": [
    {
      "target_name": "bitback_native",
      "sources": ["native/bitback_native.c"],
      "cflags": ["-Wall", "-Wextra", "-O2"]
    }
  ]
}
