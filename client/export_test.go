package client

// SealedBodyForTest returns the sealed body of a prepared message, so a
// test can send it in forms the client itself never uses.
func SealedBodyForTest(o *Outgoing) []byte { return o.body }

// MemoryStorageForTest returns a home and a downloads folder held in
// memory, as a browser's would be.
func MemoryStorageForTest() (Storage, Downloads, func(name string) ([]byte, bool)) {
	st, dl := memStorage{}, memDownloads{memStorage{}}
	saved := func(name string) ([]byte, bool) {
		b, err := dl.Read("saved/" + name)
		return b, err == nil
	}
	return st, dl, saved
}
