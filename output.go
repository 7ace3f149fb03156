package main

// What the user sees. Wording rules:
//   - an error is one line on stderr, "securefastchat: " and what went wrong,
//     then, where there is one, what to do about it;
//   - never print a password, a token or a private key;
//   - exit 0 on success, 1 on a failure, 2 on bad usage.

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"securefastchat/client"
	"securefastchat/proto"
	"securefastchat/store"
)

// usageError is bad command-line usage (exit 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// parseFlags parses a command's flags. A bad flag is one line naming the
// command's --help; --help prints the usage and exits 0.
func parseFlags(fs *flag.FlagSet, args []string) error {
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	fs.SetOutput(os.Stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.Usage()
		return err
	case err != nil:
		return usagef("%s: %v (see 'securefastchat %s --help')", fs.Name(), err, fs.Name())
	}
	return nil
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintln(os.Stderr, "securefastchat: "+describe(err))
	var ue *usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

// describe turns an error into the line the user reads.
func describe(err error) string {
	var kc *client.KeyChangedError
	switch {
	case errors.As(err, &kc):
		return kc.Error()
	case errors.Is(err, proto.ErrUnsupportedVersion):
		return "the server speaks another protocol version than this client; upgrade the older of the two (" + err.Error() + ")"
	case errors.Is(err, proto.ErrHandshakeFailed):
		return err.Error() + " (the server's identity could not be confirmed; nothing was sent)"
	case errors.Is(err, client.ErrNotServer):
		return err.Error()[len("client: "):] + "; check --server"
	case errors.Is(err, client.ErrConnect):
		return err.Error() + " (is the server running, and is --server right?)"
	case errors.Is(err, client.ErrPasswordRefused):
		return "wrong user name or password (or the account is temporarily throttled after failed attempts). " + strings.TrimPrefix(client.ErrPasswordRefused.Error(), "client: the server refused the password. ")
	case errors.Is(err, client.ErrFirstDeviceRemoved):
		return strings.TrimPrefix(client.ErrFirstDeviceRemoved.Error(), "client: ")
	case errors.Is(err, proto.CodeInvalidCredentials):
		return "wrong user name or password (or the account is temporarily throttled after failed attempts)"
	case errors.Is(err, proto.CodeUsernameTaken):
		return "that user name is taken; pick another"
	case errors.Is(err, proto.CodeInvalidUsername):
		return "invalid user name: use 1 to 32 characters of a-z A-Z 0-9 _"
	case errors.Is(err, proto.CodeInvalidPassword):
		return fmt.Sprintf("invalid password: use %d to %d bytes", proto.MinPasswordLen, proto.MaxPasswordLen)
	case errors.Is(err, proto.CodeNoSuchRecipient), errors.Is(err, proto.CodeNoSuchUser):
		return "no such user on this server"
	case errors.Is(err, proto.CodeQueueFull):
		return "the receiver's queue is full (they have been away a long time); the message was not accepted; try again later"
	case errors.Is(err, proto.CodeStorageUnavailable):
		return "the server could not store the message (its disk may be full); it was not accepted; try again later"
	case errors.Is(err, proto.CodeRecipientOffline), errors.Is(err, proto.CodeRecipientBusy):
		return "the message was not accepted; try again"
	case errors.Is(err, proto.CodeNoSuchGroup):
		return "no such group, or you are not a member"
	case errors.Is(err, proto.CodeGroupTaken):
		return "a group by that name exists; pick another"
	case errors.Is(err, proto.ErrNotAllowed):
		return "not allowed: only a group's admins add, remove and promote members, and its last admin cannot be removed"
	case errors.Is(err, proto.CodeForbidden):
		var re *proto.RemoteError
		if errors.As(err, &re) && re.Message != "" {
			return "not allowed: " + re.Message
		}
		return "not allowed"
	case errors.Is(err, client.ErrGroupChain):
		return err.Error() + " (the server may be tampering with the group; nothing was sent)"
	case errors.Is(err, proto.CodeSignupClosed):
		return "this server takes no new accounts; ask its operator"
	case errors.Is(err, proto.CodeInvalidInvite):
		return "this server signs up by invitation: --invite needs an unused, unexpired code from its operator ('securefastchat admin invite')"
	case errors.Is(err, proto.CodeRateLimited):
		var re *proto.RemoteError
		if errors.As(err, &re) && re.Message != "" {
			return "the server refused: " + re.Message
		}
		return "too many attempts; wait a while and retry"
	case errors.Is(err, client.ErrBadIdentity):
		return "wrong password: it does not open your identity key in the home directory (or the file is damaged); nothing was sent to the server"
	case errors.Is(err, client.ErrNoIdentity):
		return err.Error() + "; sign up from this home directory, or pass the --home you signed up with"
	case errors.Is(err, store.ErrLocked):
		return err.Error() + " (another server is running on this data directory)"
	case errors.Is(err, store.ErrCorrupt):
		return err.Error() + " (the file was left untouched; restore it from a backup)"
	}
	return err.Error()
}
