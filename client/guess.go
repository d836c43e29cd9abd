package client

// closest finds the candidate a mistyped word was most likely meant to
// be: the one fewest edits away (a letter added, dropped, changed, or two
// neighbours swapped), if it is near enough to be a typo (one edit in a
// word of up to four letters, two in a longer one) and no other candidate
// is as near.
func closest(word string, candidates []string) (string, bool) {
	limit := 1
	if len([]rune(word)) > 4 {
		limit = 2
	}
	best, bestDist, tie := "", limit+1, false
	for _, c := range candidates {
		d := editDistance(word, c)
		switch {
		case d < bestDist:
			best, bestDist, tie = c, d, false
		case d == bestDist && c != best:
			tie = true
		}
	}
	return best, bestDist <= limit && bestDist > 0 && !tie
}

// editDistance is the optimal string alignment distance between a and b:
// Levenshtein's insertions, deletions and substitutions, plus swaps of two
// adjacent letters, each counting one.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	// d[i][j] is the distance between ra[:i] and rb[:j].
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}
