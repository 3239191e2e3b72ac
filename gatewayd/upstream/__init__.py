"""The upstream HTTP/1.1 client: connections, pools, TLS, decoding, SSE framing, the stream reader."""
