"""The experiment apparatus (matched latency, pooling, digest, seed noise): not installed;
it uses the library, the library never uses it. Results: research/RESULTS.md."""
