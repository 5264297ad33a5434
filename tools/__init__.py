"""Development tools: benchmarks and the local HTTP server the tests use."""
