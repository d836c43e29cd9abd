package db_test

import (
	"strings"
	"testing"

	"github.com/tpcd/tpcd/db"
)

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"postgresql://u:s3cret@db:5432/x":                 "postgresql://u:xxxxx@db:5432/x",
		"postgres://u@db/x?sslmode=disable":               "postgres://u@db/x?sslmode=disable",
		"postgres://db/x?password=s3cret&sslmode=require": "postgres://db/x?password=xxxxx&sslmode=require",
		"postgres://u:s3cret@db/x?password=s3cret":        "postgres://u:xxxxx@db/x?password=xxxxx",
		"postgres://u:s3cret@[::1/x":                      "<unparsable connection string>",
	} {
		got := db.Redact(in)
		if got != want || strings.Contains(got, "s3cret") {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}
