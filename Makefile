# The README's two commands: `make demo` and `make test`. Everything else is a helper.
.PHONY: demo test build deps peers bench clean

NPM_STAMP := node_modules/.package-lock.json

deps: $(NPM_STAMP)
$(NPM_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error

build: deps
	npx tsc -p tsconfig.json

peers:
	bash scripts/install-peers.sh

## make demo: install, build, and run the end-to-end walk-through (no QEMU needed).
demo: build
	node dist/scripts/demo.js

## make test: install (npm dependencies and, when missing, the Debian peers), build, run every test.
test: deps peers build
	node scripts/run-tests.mjs

## make bench: the side-by-side benchmarks (see bench/README.md).
bench: build
	node dist/bench/run.js

clean:
	rm -rf dist
