"""The server side: the resource tree, the client connection, answers in the client's dialect."""
