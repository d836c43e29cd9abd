package metrics

import (
	"regexp"
	"strings"
)

// Reason classes of aborts, the values of the "reason" label.
const (
	ReasonRollback           = "rollback"
	ReasonVoteNo             = "vote_no"
	ReasonVoteTimeout        = "vote_timeout"
	ReasonUnreachable        = "unreachable"
	ReasonExecTimeout        = "exec_timeout"
	ReasonStatementFailed    = "statement_failed"
	ReasonClientIdle         = "client_idle"
	ReasonCoordinatorRestart = "coordinator_restart"
	ReasonOther              = "other"
)

// statementFailure is how the engine words a failed statement: the
// participant, then PostgreSQL's error.
var statementFailure = regexp.MustCompile(`^p[0-9]+: `)

// ReasonClass sorts an abort reason, free text from the engine, into a few
// classes, so that the label's values stay few whatever the errors say.
func ReasonClass(reason string) string {
	switch {
	case strings.Contains(reason, "rolled back by client"):
		return ReasonRollback
	case strings.Contains(reason, "voted no"):
		return ReasonVoteNo
	case strings.Contains(reason, "vote timeout"):
		return ReasonVoteTimeout
	case strings.Contains(reason, "did not answer statement"):
		return ReasonExecTimeout
	case strings.Contains(reason, "unreachable"):
		return ReasonUnreachable
	case strings.Contains(reason, "client idle"):
		return ReasonClientIdle
	case strings.Contains(reason, "coordinator restarted"):
		return ReasonCoordinatorRestart
	case statementFailure.MatchString(reason):
		return ReasonStatementFailed
	}
	return ReasonOther
}
