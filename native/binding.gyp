{
  "targets": [
    {
      "target_name": "ferry_fs",
      "sources": ["ferry_fs.c", "batch_io.c", "direct_io.c", "rolling.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
