package pgwire

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"
)

// scramIterations is PostgreSQL's default for SCRAM-SHA-256 verifiers.
const scramIterations = 4096

const scramMechanism = "SCRAM-SHA-256"

// credential is a user's SCRAM-SHA-256 verifier (RFC 5802, RFC 7677): the
// password itself is not kept once the verifier is made.
type credential struct {
	salt      []byte
	storedKey []byte
	serverKey []byte
}

func newCredential(password string) (credential, error) {
	salt := make([]byte, 16)
	rand.Read(salt)
	salted, err := pbkdf2.Key(sha256.New, password, salt, scramIterations, sha256.Size)
	if err != nil {
		return credential{}, err
	}
	clientKey := hmacSHA256(salted, "Client Key")
	stored := sha256.Sum256(clientKey)
	return credential{salt: salt, storedKey: stored[:], serverKey: hmacSHA256(salted, "Server Key")}, nil
}

// decoy is the verifier of a user that does not exist: the exchange goes
// on as for any user and fails at the proof, so that the answers do not
// tell which users exist. Its salt is fixed per server and name.
func (a *authenticator) decoy(user string) credential {
	return credential{salt: hmacSHA256(a.decoyKey, user)[:16], storedKey: make([]byte, sha256.Size), serverKey: make([]byte, sha256.Size)}
}

func hmacSHA256(key []byte, msg string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(msg))
	return h.Sum(nil)
}

// authenticator checks a client's password with SCRAM-SHA-256, or lets
// everyone in (trust).
type authenticator struct {
	trust    bool
	users    map[string]credential
	decoyKey []byte
}

func newAuthenticator(users map[string]string, trust bool) (*authenticator, error) {
	a := &authenticator{trust: trust, users: map[string]credential{}, decoyKey: make([]byte, 32)}
	rand.Read(a.decoyKey)
	for name, pw := range users {
		if name == "" || pw == "" {
			return nil, errors.New("a user needs a name and a password")
		}
		c, err := newCredential(pw)
		if err != nil {
			return nil, fmt.Errorf("user %s: %w", name, err)
		}
		a.users[name] = c
	}
	if !trust && len(a.users) == 0 {
		return nil, errors.New("no users to authenticate and trust not asked for")
	}
	return a, nil
}

// authFailed is what every failed login answers, whatever failed.
func authFailed(user string) *pgError {
	return &pgError{severity: "FATAL", code: codeInvalidPassword, message: fmt.Sprintf("password authentication failed for user %q", user)}
}

// authenticate runs the exchange on be for user (the start-up message's),
// ending with AuthenticationOk.
func (a *authenticator) authenticate(be *pgproto3.Backend, user string) error {
	if a.trust {
		be.Send(&pgproto3.AuthenticationOk{})
		return nil
	}
	cred, known := a.users[user]
	if !known {
		cred = a.decoy(user)
	}
	be.Send(&pgproto3.AuthenticationSASL{AuthMechanisms: []string{scramMechanism}})
	if err := be.Flush(); err != nil {
		return err
	}
	if err := be.SetAuthType(pgproto3.AuthTypeSASL); err != nil {
		return err
	}
	msg, err := be.Receive()
	if err != nil {
		return err
	}
	first, ok := msg.(*pgproto3.SASLInitialResponse)
	if !ok {
		return &pgError{severity: "FATAL", code: codeProtocolViolation, message: fmt.Sprintf("expected SASL initial response, got %T", msg)}
	}
	if first.AuthMechanism != scramMechanism {
		return &pgError{severity: "FATAL", code: codeProtocolViolation, message: fmt.Sprintf("SASL mechanism %q not supported; use %s", first.AuthMechanism, scramMechanism)}
	}
	gs2, clientFirstBare, clientNonce, err := parseClientFirst(string(first.Data))
	if err != nil {
		return err
	}
	nonce := make([]byte, 18)
	rand.Read(nonce)
	fullNonce := clientNonce + base64.StdEncoding.EncodeToString(nonce)
	serverFirst := fmt.Sprintf("r=%s,s=%s,i=%d", fullNonce, base64.StdEncoding.EncodeToString(cred.salt), scramIterations)
	be.Send(&pgproto3.AuthenticationSASLContinue{Data: []byte(serverFirst)})
	if err := be.Flush(); err != nil {
		return err
	}
	if err := be.SetAuthType(pgproto3.AuthTypeSASLContinue); err != nil {
		return err
	}
	if msg, err = be.Receive(); err != nil {
		return err
	}
	final, ok := msg.(*pgproto3.SASLResponse)
	if !ok {
		return &pgError{severity: "FATAL", code: codeProtocolViolation, message: fmt.Sprintf("expected SASL response, got %T", msg)}
	}
	withoutProof, proof, err := parseClientFinal(string(final.Data), gs2, fullNonce)
	if err != nil {
		return err
	}
	authMessage := clientFirstBare + "," + serverFirst + "," + withoutProof
	signature := hmacSHA256(cred.storedKey, authMessage)
	if len(proof) != len(signature) {
		return authFailed(user)
	}
	clientKey := make([]byte, len(proof))
	subtle.XORBytes(clientKey, proof, signature)
	stored := sha256.Sum256(clientKey)
	if subtle.ConstantTimeCompare(stored[:], cred.storedKey) != 1 || !known {
		return authFailed(user)
	}
	serverSignature := hmacSHA256(cred.serverKey, authMessage)
	be.Send(&pgproto3.AuthenticationSASLFinal{Data: []byte("v=" + base64.StdEncoding.EncodeToString(serverSignature))})
	be.Send(&pgproto3.AuthenticationOk{})
	return nil
}

// parseClientFirst reads "gs2-header client-first-bare". Channel binding
// is not offered, so the header is "n,," or "y,,". The user name in it is
// ignored, as PostgreSQL does: the start-up message's counts.
func parseClientFirst(s string) (gs2, bare, nonce string, err error) {
	bad := &pgError{severity: "FATAL", code: codeProtocolViolation, message: "malformed SCRAM client-first-message"}
	switch {
	case strings.HasPrefix(s, "n,,"), strings.HasPrefix(s, "y,,"):
		gs2, bare = s[:3], s[3:]
	case strings.HasPrefix(s, "p="):
		return "", "", "", &pgError{severity: "FATAL", code: codeProtocolViolation, message: "SCRAM channel binding is not supported"}
	default:
		return "", "", "", bad
	}
	for _, attr := range strings.Split(bare, ",") {
		if v, ok := strings.CutPrefix(attr, "r="); ok {
			nonce = v
		}
	}
	if nonce == "" {
		return "", "", "", bad
	}
	return gs2, bare, nonce, nil
}

// parseClientFinal reads "c=...,r=...,p=...", checks the channel binding
// echo and the nonce, and returns the message without its proof.
func parseClientFinal(s, gs2, nonce string) (withoutProof string, proof []byte, err error) {
	bad := &pgError{severity: "FATAL", code: codeProtocolViolation, message: "malformed SCRAM client-final-message"}
	i := strings.LastIndex(s, ",p=")
	if i < 0 {
		return "", nil, bad
	}
	withoutProof = s[:i]
	if proof, err = base64.StdEncoding.DecodeString(s[i+3:]); err != nil {
		return "", nil, bad
	}
	var binding, gotNonce string
	for _, attr := range strings.Split(withoutProof, ",") {
		if v, ok := strings.CutPrefix(attr, "c="); ok {
			binding = v
		} else if v, ok := strings.CutPrefix(attr, "r="); ok {
			gotNonce = v
		}
	}
	if binding != base64.StdEncoding.EncodeToString([]byte(gs2)) || gotNonce != nonce {
		return "", nil, bad
	}
	return withoutProof, proof, nil
}
