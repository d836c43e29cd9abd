# Developer entry points for tpcd.

SQLC_VERSION := v1.31.1
SQLC ?= $(shell command -v sqlc || echo $(HOME)/go/bin/sqlc)

.PHONY: generate verify-generated

## generate: regenerate queries/ from queries/*.sql and db/migrations (sqlc)
generate: $(SQLC)
	$(SQLC) generate

## verify-generated: fail if the generated code in queries/ is stale
verify-generated: $(SQLC)
	$(SQLC) diff

# Built only when no sqlc binary is found, pinned so every checkout generates the
# same code.
$(SQLC):
	GOBIN=$(abspath $(dir $(SQLC))) go install github.com/sqlc-dev/sqlc/cmd/sqlc@$(SQLC_VERSION)
