package client

import (
	"strings"
	"testing"
	"time"

	"securefastchat/proto"
)

// TestFromRemoved: what a device sent before its removal is read within
// RemovedDeviceGrace of the removal; what it says it sent after (beyond
// RemovedDeviceSkew), or what arrives later than the grace, is not, and
// the reason says which.
func TestFromRemoved(t *testing.T) {
	at := time.Unix(1_800_000_000, 0)
	r := &proto.RemovedDevice{Device: proto.Device{Name: "laptop"}, At: at.Unix()}
	if err := fromRemoved(r, at.Add(-time.Minute), at.Add(time.Hour)); err != nil {
		t.Fatalf("sent before, read an hour after: %v", err)
	}
	if err := fromRemoved(r, at.Add(-time.Minute), at.Add(RemovedDeviceGrace-time.Minute)); err != nil {
		t.Fatalf("read just within the grace: %v", err)
	}
	if err := fromRemoved(r, at.Add(RemovedDeviceSkew-time.Second), at.Add(time.Hour)); err != nil {
		t.Fatalf("sent in the same second, or by a clock a little ahead: %v", err)
	}
	if err := fromRemoved(r, at.Add(RemovedDeviceSkew+time.Second), at.Add(time.Hour)); err == nil || !strings.Contains(err.Error(), "sent after that") {
		t.Fatalf("sent after the removal: %v", err)
	}
	if err := fromRemoved(r, at.Add(-time.Minute), at.Add(RemovedDeviceGrace+time.Minute)); err == nil || !strings.Contains(err.Error(), "7 days after") {
		t.Fatalf("read after the grace: %v", err)
	}
}
