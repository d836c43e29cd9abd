package pgwire

import (
	"context"
	"errors"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/rpc"
)

// SQLSTATEs the front door answers with itself; a participant's errors keep
// their own.
const (
	codeSyntaxError          = "42601"
	codeFeatureNotSupported  = "0A000"
	codeInFailedTransaction  = "25P02"
	codeActiveTransaction    = "25001"
	codeNoActiveTransaction  = "25P01"
	codeTransactionRollback  = "40000"
	codeQueryCanceled        = "57014"
	codeInvalidPassword      = "28P01"
	codeInvalidAuthorization = "28000"
	codeProtocolViolation    = "08P01"
	codeInvalidParameter     = "22023"
	// codeCharacterNotInRepertoire is what PostgreSQL answers for bytes
	// that are not valid in the database's encoding.
	codeCharacterNotInRepertoire = "22021"
	codeUndefinedStatement       = "26000"
	codeUndefinedCursor          = "34000"
	codeTooManyConnections       = "53300"
	codeResources                = "53000"
	codeCannotConnectNow         = "57P03"
	codeInternal                 = "XX000"
	// codeNoRoute is PostgreSQL's "invalid parameter value": the statement
	// lacks what routes it (a node, or a shard key's value).
	codeNoRoute = codeInvalidParameter
)

// pgError is an error as a PostgreSQL client sees it (ErrorResponse).
type pgError struct {
	severity string // ERROR if empty
	code     string
	message  string
	detail   string
	hint     string
	// position is 1-based in the query string the client sent, 0 if none.
	position int32
}

func (e *pgError) Error() string { return e.message }

func (e *pgError) response() *pgproto3.ErrorResponse {
	sev := e.severity
	if sev == "" {
		sev = "ERROR"
	}
	return &pgproto3.ErrorResponse{Severity: sev, SeverityUnlocalized: sev, Code: e.code, Message: e.message,
		Detail: e.detail, Hint: e.hint, Position: e.position}
}

// asPGError turns what a coordinator call answered into the error a
// PostgreSQL client expects: a participant's own SQLSTATE, message and
// detail when PostgreSQL refused the statement (its position moved by
// offset, where the statement starts in the client's query string), else
// a SQLSTATE that fits the coordinator's error code.
func asPGError(err error, offset int) *pgError {
	var pe *pgError
	if errors.As(err, &pe) {
		return pe
	}
	if errors.Is(err, context.Canceled) {
		return &pgError{code: codeQueryCanceled, message: "canceling statement due to user request"}
	}
	if s, ok := api.SQLErrorOf(err); ok {
		e := &pgError{severity: s.Severity, code: s.Code, message: s.Message, detail: s.Detail, hint: s.Hint}
		if s.Position > 0 {
			e.position = s.Position + int32(offset)
		}
		return e
	}
	msg := err.Error()
	var re *rpc.Error
	if !errors.As(err, &re) {
		return &pgError{code: codeInternal, message: msg}
	}
	msg = strings.TrimSpace(re.Message)
	switch re.Code {
	case rpc.CodeAborted, rpc.CodeTxNotActive, rpc.CodeUnknownTx:
		return &pgError{code: codeTransactionRollback, message: msg}
	case rpc.CodeLimit:
		return &pgError{code: codeResources, message: msg}
	case rpc.CodeUnavailable:
		return &pgError{code: codeCannotConnectNow, message: msg}
	case rpc.CodeBadNode:
		return &pgError{code: codeNoRoute, message: msg}
	}
	return &pgError{code: codeInternal, message: msg}
}
