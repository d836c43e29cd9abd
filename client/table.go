package client

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/mattn/go-runewidth"
)

// numericTypes are the PostgreSQL types whose values psql right-aligns.
var numericTypes = map[string]bool{
	"int2": true, "int4": true, "int8": true, "float4": true, "float8": true,
	"numeric": true, "oid": true, "money": true,
}

// numberText matches what PostgreSQL prints for a number: 42, -1.5, 1e+30.
var numberText = regexp.MustCompile(`^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$`)

// rightAligned says which columns hold numbers: by the column's type when
// the participant named it, else by the values (every one that is not NULL
// reads as a number, and there is one).
func rightAligned(t *Table) []bool {
	right := make([]bool, len(t.Columns))
	for i := range t.Columns {
		if i < len(t.Types) && t.Types[i] != "" {
			right[i] = numericTypes[t.Types[i]]
			continue
		}
		seen := false
		right[i] = true
		for _, row := range t.Rows {
			if i >= len(row) || row[i] == nil {
				continue
			}
			seen = true
			if !numberText.MatchString(fmt.Sprint(row[i])) {
				right[i] = false
				break
			}
		}
		right[i] = right[i] && seen
	}
	return right
}

// tableText is a table laid out for a terminal.
type tableText struct {
	t      *Table
	cells  [][]string // the rows' cells as shown
	widths []int      // of each column, header included
	right  []bool
}

func layout(t *Table) *tableText {
	tt := &tableText{t: t, cells: make([][]string, len(t.Rows)), widths: make([]int, len(t.Columns)), right: rightAligned(t)}
	for i, c := range t.Columns {
		tt.widths[i] = runewidth.StringWidth(c)
	}
	for r, row := range t.Rows {
		tt.cells[r] = make([]string, len(t.Columns))
		for i := range t.Columns {
			s := "NULL"
			if i < len(row) && row[i] != nil {
				s = cellText(fmt.Sprint(row[i]))
			}
			tt.cells[r][i] = s
			tt.widths[i] = max(tt.widths[i], runewidth.StringWidth(s))
		}
	}
	return tt
}

// width is how many columns the aligned table takes on a terminal.
func (tt *tableText) width() int {
	w := 0
	for _, cw := range tt.widths {
		w += cw + 3 // " " + cell + " |"
	}
	return max(w-1, 0)
}

// aligned prints the table psql style, numbers right-aligned:
//
//	 id | name
//	----+------
//	  1 | ada
//	(1 row)
func (tt *tableText) aligned(b *strings.Builder) {
	line := func(vals []string, header bool) {
		for i, v := range vals {
			if i > 0 {
				b.WriteString(" |")
			}
			b.WriteByte(' ')
			pad := strings.Repeat(" ", tt.widths[i]-runewidth.StringWidth(v))
			switch {
			case tt.right[i] && !header:
				b.WriteString(pad + v)
			case i < len(vals)-1:
				b.WriteString(v + pad)
			default:
				b.WriteString(v) // no trailing blanks
			}
		}
		b.WriteByte('\n')
	}
	line(tt.t.Columns, true)
	for i, wd := range tt.widths {
		if i > 0 {
			b.WriteByte('+')
		}
		b.WriteString(strings.Repeat("-", wd+2))
	}
	b.WriteByte('\n')
	for _, row := range tt.cells {
		line(row, false)
	}
	if tt.t.Count {
		b.WriteString(rowCount(len(tt.t.Rows)) + "\n")
	}
}

// expanded prints each row as a block of "column | value" lines, as psql's
// \x does, for tables too wide to read across:
//
//	-[ RECORD 1 ]----
//	id   | 1
//	name | ada
func (tt *tableText) expanded(b *strings.Builder) {
	if len(tt.cells) == 0 {
		if tt.t.Count {
			b.WriteString(rowCount(0) + "\n")
		}
		return
	}
	nameWidth, valueWidth := 0, 0
	for i, c := range tt.t.Columns {
		nameWidth = max(nameWidth, runewidth.StringWidth(c))
		valueWidth = max(valueWidth, tt.widths[i])
	}
	for r, row := range tt.cells {
		head := fmt.Sprintf("-[ RECORD %d ]", r+1)
		b.WriteString(head + strings.Repeat("-", max(nameWidth+3+valueWidth-len(head), 0)) + "\n")
		for i, c := range tt.t.Columns {
			b.WriteString(c + strings.Repeat(" ", nameWidth-runewidth.StringWidth(c)) + " | " + row[i] + "\n")
		}
	}
}

func rowCount(n int) string {
	if n == 1 {
		return "(1 row)"
	}
	return fmt.Sprintf("(%d rows)", n)
}

// cellText keeps a cell on one line of the table.
func cellText(s string) string {
	if !strings.ContainsAny(s, "\n\r\t") {
		return s
	}
	return strings.NewReplacer("\n", `\n`, "\r", `\r`, "\t", `\t`).Replace(s)
}
