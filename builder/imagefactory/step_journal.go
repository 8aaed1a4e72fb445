package imagefactory

import (
	"context"
	"fmt"
	"log"
	"strings"

	"github.com/hashicorp/packer-plugin-sdk/multistep"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
)

// stepJournal reaps what killed builds left behind (not what aborted
// builds keep for inspection: it reminds the user of those), then opens
// this build's journal. It is the first step, so its cleanup runs last and
// releases anything the other steps' cleanups did not (a panic, a bug).
type stepJournal struct {
	journal *cleanup.Journal
}

func (s *stepJournal) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	ui := uiOf(state)
	cfg := configOf(state)
	dir := cleanup.DefaultStateDir()

	report, err := cleanup.Reap(dir)
	if len(report.Released) > 0 {
		ui.Say(fmt.Sprintf("Released what an earlier, killed build left behind:\n  %s",
			strings.Join(report.Released, "\n  ")))
	}
	if err != nil {
		// Not this build's resources: warn, and the journal stays for the
		// next build to try again, rather than fail every build from now on.
		ui.Error(fmt.Sprintf("Warning: could not release everything an earlier build left behind (tried again next build): %v", err))
	}
	// Kept for inspection (-on-error=abort, abort.go): the user's until
	// they run the reap command, which may be while they look inside.
	mountPath, _ := state.Get(stateMountPath).(string)
	for _, k := range report.Kept {
		ui.Say(keptReminder(k))
		if clash := keptClash(k, cfg.OutputDirectory, mountPath); clash != "" {
			return haltf(state, "%s is still held by an aborted build kept for inspection (journal %s): release it first with %s, or choose another",
				clash, k.Journal, cleanup.ReapCommandLine(k.Journal))
		}
	}

	j, err := cleanup.Open(dir, fmt.Sprintf("build %q, output %s", cfg.PackerBuildName, cfg.OutputDirectory))
	if err != nil {
		return haltf(state, "opening the cleanup journal in %s: %v", dir, err)
	}
	j.SetLogger(func(msg string) { log.Printf("cleanup: %s", msg) })
	s.journal = j
	state.Put(stateJournal, j)
	return multistep.ActionContinue
}

func (s *stepJournal) Cleanup(state multistep.StateBag) {
	if s.journal == nil {
		return
	}
	if err := s.journal.Close(); err != nil {
		uiOf(state).Error(fmt.Sprintf("releasing what the build held: %v", err))
	}
}

func journalOf(state multistep.StateBag) *cleanup.Journal {
	return state.Get(stateJournal).(*cleanup.Journal)
}
