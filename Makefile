# Convenience wrappers; dev.py does the work so a machine without make needs only Python.
.PHONY: run test bench vectors
run:
	python3 dev.py run
test:
	python3 dev.py test
bench:
	python3 dev.py run && .venv/bin/python benchmarks/protocol.py
vectors:
	.venv/bin/python scripts/make_vectors.py
