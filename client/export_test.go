package client

// SealedBodyForTest returns the sealed body of a prepared message, so a
// test can send it in forms the client itself never uses.
func SealedBodyForTest(o *Outgoing) []byte { return o.body }
