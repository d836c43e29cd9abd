package client

import (
	"regexp"
	"slices"
	"strconv"
	"strings"
)

var (
	intRe   = regexp.MustCompile(`^[+-]?[0-9]+$`)
	floatRe = regexp.MustCompile(`^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$`)
	dateRe  = regexp.MustCompile(`^[0-9]{4}-[0-9]{2}-[0-9]{2}$`)
	tsRe    = regexp.MustCompile(`^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)?$`)
)

// InferType guesses a column's SQL type from its values: bigint, double
// precision, boolean, date or timestamptz when every non-empty value reads
// as one, text otherwise (and for a column with no values).
func InferType(values []string) string {
	kinds := []struct {
		typ string
		ok  func(string) bool
	}{
		{"bigint", func(v string) bool {
			_, err := strconv.ParseInt(v, 10, 64)
			return err == nil && intRe.MatchString(v)
		}},
		{"double precision", floatRe.MatchString},
		{"boolean", func(v string) bool {
			switch strings.ToLower(v) {
			case "true", "false":
				return true
			}
			return false
		}},
		{"date", dateRe.MatchString},
		{"timestamptz", tsRe.MatchString},
	}
	if !slices.ContainsFunc(values, func(v string) bool { return v != "" }) {
		return "text"
	}
next:
	for _, k := range kinds {
		for _, v := range values {
			if v != "" && !k.ok(v) {
				continue next
			}
		}
		return k.typ
	}
	return "text"
}

// quoteIdent quotes a name for SQL, so any CSV header works as a column.
func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// quoteTable quotes schema.table or table.
func quoteTable(s string) string {
	parts := strings.Split(s, ".")
	for i, p := range parts {
		parts[i] = quoteIdent(p)
	}
	return strings.Join(parts, ".")
}
