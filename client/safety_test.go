package client_test

import (
	"regexp"
	"testing"

	"securefastchat/internal/testserver"
)

func TestSafetyNumber(t *testing.T) {
	s := testserver.Start(t, nil)
	ann := testserver.Signup(t, s, "ann")
	bob := testserver.Signup(t, s, "bob")
	ctx := ctxT(t)
	bk, err := ann.PeerKeys(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	ak, err := bob.PeerKeys(ctx, "ann")
	if err != nil {
		t.Fatal(err)
	}
	a, b := ann.SafetyNumber(bk), bob.SafetyNumber(ak)
	if a != b {
		t.Fatalf("the two sides see different numbers:\n%s\n%s", a, b)
	}
	if !regexp.MustCompile(`^\d{5}( \d{5}){11}$`).MatchString(a) {
		t.Fatalf("not 12 groups of 5 digits: %q", a)
	}
	testserver.Signup(t, s, "eve")
	ek, err := ann.PeerKeys(ctx, "eve")
	if err != nil {
		t.Fatal(err)
	}
	if ann.SafetyNumber(ek) == a {
		t.Fatal("another contact gives the same number")
	}
	if *ann.LocalKey("history") == *bob.LocalKey("history") || *ann.LocalKey("history") == *ann.LocalKey("other") {
		t.Fatal("local keys are not separated by user and purpose")
	}
}
