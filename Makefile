GO ?= go
# Tests are sized for a 2-core machine; the whole suite must stay well under CI's 90 minutes.
TEST_TIMEOUT ?= 40m

.PHONY: build run test lint bench fuzz clean

build:
	$(GO) build -o bin/sluice ./cmd/sluice
	$(GO) build -o bin/loadgen ./cmd/loadgen

# The broker on its embedded default: port 9092, data in ./data, no other service.
run:
	$(GO) run ./cmd/sluice serve

# Everything CI runs: lint, then every test (unit, end-to-end, crash) with the race detector off
# (the e2e tests drive real processes; -race would triple their time on 2 cores).
test: lint
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

clean:
	rm -rf bin
