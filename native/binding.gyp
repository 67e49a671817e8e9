{
  "targets": [
    {
      "target_name": "ferry_fs",
      "sources": ["ferry_fs.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
