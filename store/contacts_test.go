package store

import (
	"slices"
	"testing"
)

// TestContacts: writing to someone makes no contact until they write
// back (a stranger's message is a request); members of a group are
// contacts.
func TestContacts(t *testing.T) {
	s := openTemp(t)
	if err := s.AddContact("ann", "bob"); err != nil {
		t.Fatal(err)
	}
	b := s.NewBatcher(BatcherOptions{})
	done := make(chan Result, 1)
	if err := b.Submit(&Op{Contact: [2]string{"ann", "cat"}, Done: func(r Result) { done <- r }}); err != nil {
		t.Fatal(err)
	}
	if r := <-done; r.Err != nil {
		t.Fatal(r.Err)
	}
	b.Close()
	// cat writes back: ann and cat are contacts. eve's message to ann is
	// not answered: no contact either way.
	if err := s.AddContact("cat", "ann"); err != nil {
		t.Fatal(err)
	}
	if err := s.AddContact("eve", "ann"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := s.Wrote("eve", "ann"); !ok {
		t.Fatal("eve's message was not recorded as written")
	}
	g := &GroupState{Name: "team", Members: []GroupMember{{Name: "ann", Admin: true}, {Name: "dan"}, {Name: "bob"}}}
	if err := s.CreateGroup(g, []byte("statement 0"), nil); err != nil {
		t.Fatal(err)
	}
	for user, want := range map[string][]string{
		"ann": {"bob", "cat", "dan"},
		"bob": {"ann", "dan"},
		"cat": {"ann"},
		"dan": {"ann", "bob"},
		"eve": {},
		// A name that is a prefix of another sees only its own.
		"an": {},
	} {
		got, err := s.Contacts(user)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("contacts of %s: %v, want %v", user, got, want)
		}
	}
}
