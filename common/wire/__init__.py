"""What crosses the network: the publication protocol (protobuf + generated gRPC code) and its rules."""
