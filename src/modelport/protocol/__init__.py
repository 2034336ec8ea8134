"""The Open Inference Protocol (KServe V2): messages and codecs, no I/O."""
