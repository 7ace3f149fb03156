package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"securefastchat/balancer"
	"securefastchat/groups"
	"securefastchat/internal/account"
	"securefastchat/internal/admin"
	"securefastchat/internal/passwd"
	serverprocess "securefastchat/internal/serve"
	"securefastchat/internal/server"
	"securefastchat/proto"
	"securefastchat/shard"
	"securefastchat/store"
)

// defaultDataDir is $XDG_DATA_HOME/securefastchat, or
// ~/.local/share/securefastchat, or ./securefastchat-data.
func defaultDataDir() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "securefastchat")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "share", "securefastchat")
	}
	return "securefastchat-data"
}

func cmdServe(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	listen := fs.String("listen", server.DefaultListen, "address to listen on")
	data := fs.String("data", defaultDataDir(), "data directory (store and server key)")
	shards := fs.Int("shards", runtime.NumCPU(), "number of shards")
	strategy := fs.String("strategy", balancer.DefaultStrategy, "shard strategy: "+strings.Join(balancer.Names(), ", ")+" (p2c cannot be steered by a client; round-robin can)")
	argon := fs.String("argon2", passwd.Default.String(), "password hashing cost, t=ITER,m=KIB,p=THREADS (at least "+passwd.Floor.String()+")")
	weak := fs.Bool("insecure-weak-argon2", false, "allow --argon2 below the floor (tests and benchmarks only)")
	hashConc := fs.Int("hash-concurrency", passwd.DefaultConcurrency, "password hashes run at once (bounds memory)")
	maxUnauth := fs.Int("max-unauth", shard.DefaultMaxUnauth, "connections that have not logged in, at most")
	maxUnauthIP := fs.Int("max-unauth-per-ip", shard.DefaultMaxUnauthPerIP, "connections that have not logged in, per address")
	msgRate := fs.Duration("msg-every", shard.DefaultMsgEvery, "one more message per user allowed every DURATION (burst --msg-burst; a file chunk counts as one); 0 turns message limits off")
	groupRate := fs.Duration("group-change-every", groups.ChangeEvery, fmt.Sprintf("one more group change or rekey per user and per group allowed every DURATION (burst %d); 0 turns group change limits off (benchmarks)", groups.ChangeBurst))
	msgBurst := fs.Int("msg-burst", shard.DefaultMsgBurst, "text messages a user may send at once")
	retention := fs.Duration("retention", server.DefaultRetention, "how long a queued message waits for an offline receiver before it is deleted")
	queueCount := fs.Int64("queue-max-messages", shard.DefaultQueueCount, "messages queued for one receiving device, at most")
	queueBytes := fs.Int64("queue-max-bytes", shard.DefaultQueueBytes, "bytes queued for one receiving device, at most")
	lookups := fs.Int("key-lookups", account.DefaultLimits.LookupBurst, "key lookups of users outside one's groups, per user per 15 minutes (against enumeration)")
	presence := fs.String("presence", string(shard.PresenceContacts), "who sees a user come online and go: contacts (who shares a group or a direct conversation with them), all, or off")
	broadcast := fs.String("broadcast", string(shard.BroadcastAnyone), "who may broadcast to everyone online: anyone, admins (see --admins), or off")
	admins := fs.String("admins", "", "the server's admins, comma-separated user names")
	adminAddr := fs.String("admin", "", "serve health, metrics, pprof and the admin API on ADDR (e.g. 127.0.0.1:9090); off if empty. Its token is SFC_ADMIN_TOKEN, or one the server makes and keeps in DATA/admin.token")
	adminHosts := fs.String("admin-host", "", "names (comma-separated) besides IP addresses and localhost that requests to the admin listener may give as their Host")
	signupPolicy := fs.String("signup", string(account.SignupOpen), "who may sign up: open, invite (a code from 'admin invite'), or closed")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to FILE (go tool pprof reads it)")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: securefastchat serve [flags]\n\nRuns the server. With no flags it listens on %s and keeps its\ndata in %s.\nSIGTERM or SIGINT shuts it down cleanly; SIGUSR1 logs its counters.\nEvery flag can also come from its environment variable; a flag given on\nthe command line wins.\n\n", server.DefaultListen, defaultDataDir())
		printDefaultsEnv(fs.Output(), fs)
	}
	if err := parseFlagsEnv(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("serve takes no arguments (got %q)", fs.Args())
	}
	if *shards < 1 {
		return usagef("--shards must be at least 1")
	}
	if *retention < time.Minute {
		return usagef("--retention must be at least a minute")
	}
	if *lookups < 1 {
		return usagef("--key-lookups must be at least 1")
	}
	if *queueCount < 1 || *queueBytes < 64<<10 {
		return usagef("--queue-max-messages must be at least 1 and --queue-max-bytes at least 65536")
	}
	params, err := passwd.ParseParams(*argon)
	if err != nil {
		return usagef("--argon2: %v", err)
	}
	if !*weak && !params.AtLeast(passwd.Floor) {
		return usagef("--argon2 %s is below the floor %s; add --insecure-weak-argon2 only for tests", params, passwd.Floor)
	}
	if _, err := balancer.ParseStrategy(*strategy); err != nil {
		return usagef("%v", err)
	}
	presenceMode, err := shard.ParsePresenceMode(*presence)
	if err != nil {
		return usagef("--presence: %v", err)
	}
	broadcastPolicy, err := shard.ParseBroadcastPolicy(*broadcast)
	if err != nil {
		return usagef("--broadcast: %v", err)
	}
	adminNames, err := parseAdmins(*admins)
	if err != nil {
		return usagef("--admins: %v", err)
	}
	if broadcastPolicy == shard.BroadcastAdmins && len(adminNames) == 0 {
		return usagef("--broadcast admins needs --admins NAME[,NAME...]")
	}
	policy, err := account.ParseSignupPolicy(*signupPolicy)
	if err != nil {
		return usagef("--signup: %v", err)
	}
	adminToken := os.Getenv("SFC_ADMIN_TOKEN")
	if *adminAddr != "" && adminToken != "" {
		if err := admin.CheckAccess(*adminAddr, adminToken); err != nil {
			return usagef("--admin %s: %v", *adminAddr, err)
		}
	}
	logger, err := newLogger(*logFormat, *logLevel)
	if err != nil {
		return err
	}
	return serverprocess.Run(serverprocess.Config{
		Server: server.Config{
			DataDir: *data, Listen: *listen, Strategy: *strategy,
			Argon2: params, AllowWeakArgon2: *weak, HashConcurrency: *hashConc, Retention: *retention,
			Limits: account.Limits{LookupBurst: *lookups, LookupEvery: 15 * time.Minute / time.Duration(*lookups)},
			Shard: shard.Options{
				Shards: *shards,
				Limits: shard.Limits{
					MaxUnauth: *maxUnauth, MaxUnauthPerIP: *maxUnauthIP,
					MsgEvery: offIfZero(*msgRate), MsgBurst: *msgBurst,
					QueueLimits: store.QueueLimits{Count: *queueCount, Bytes: *queueBytes},
				},
				Live: shard.Live{Presence: presenceMode, Broadcast: broadcastPolicy, Admins: adminNames},
			},
			Groups: groups.Options{ChangeEvery: offIfZero(*groupRate)},
			Signup: policy,
			Logger: logger,
		},
		AdminAddr: *adminAddr, AdminHosts: splitList(*adminHosts), AdminToken: adminToken,
		CPUProfile: *cpuProfile, Notes: os.Stderr,
	})
}

func newLogger(format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, usagef("--log-level: %v", err)
	}
	o := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, o)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, o)), nil
	}
	return nil, usagef("--log-format must be text or json")
}

// splitList splits a comma-separated flag, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

// offIfZero turns a flag's 0 ("off") into the negative duration the shard
// options take for off (their zero means the default).
func offIfZero(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

func cmdFingerprint(args []string) error {
	fs := flag.NewFlagSet("fingerprint", flag.ContinueOnError)
	data := fs.String("data", defaultDataDir(), "the server's data directory")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: securefastchat fingerprint [--data DIR]\n\nPrints the server key's fingerprint, for clients' --server-key.\n\n")
		printFlags(fs.Output(), fs)
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	kp, err := server.LoadKey(*data)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("no server key in %s (start the server once to create it)", *data)
		}
		return err
	}
	fmt.Println(kp.Public.Fingerprint())
	return nil
}

// parseAdmins reads a comma-separated list of user names into their
// canonical forms.
func parseAdmins(s string) ([]string, error) {
	var out []string
	for _, n := range strings.Split(s, ",") {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		c, err := proto.CanonicalUsername(n)
		if err != nil {
			return nil, fmt.Errorf("%q is not a user name: %v", n, err)
		}
		out = append(out, c)
	}
	return out, nil
}
