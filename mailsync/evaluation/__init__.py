"""Evaluation harness: runs the real pipeline over a labelled mailbox and scores matching quality.

    python -m mailsync.evaluation [--set fixtures/eval] [--json out.json] [--order slug|date]

1. Builds a throwaway workspace (config, SQLite database, archive, event log) in a temporary directory,
   applies the migrations, imports `<set>/crm`, then every `<set>/mail/<thread>/*.eml` through the real
   parse worker and pipeline (mailbox "eval", owner and internal domains from `labels.json`). Order:
   thread directory, then file name (`--order date` sorts by the Date header instead). The directories
   are only the judge's grouping: the product threads by headers itself.
2. Runs the daily no-reply job (mailsync/pipeline/followups.py) once, at NOW = the latest Date in the set plus
   one day: the set is read as if the job ran the morning after its last message, so a follow-up of
   ours that nobody answered for `matching.lost_after_days` before that is a lost signal.
3. Reads back what the product stored (participants, threads, open suggestions) and scores it against
   `labels.json` (schema in `<set>/README.md`). It measures; it never tunes or approves anything.
4. Prints the scores against the quality targets, then every miss; `--json` writes all numbers.

The modules follow those steps, scoring kept pure between two I/O edges:

    labels.py   labels.json and the mail files of a set               outside input, validated
    runner.py   workspace, CRM import, pipeline, no-reply job (1, 2)  I/O edge
    observe.py  what the product stored, as values (3)                database edge
    scoring.py  labels + observed -> items -> scores (3)              pure; the scoring rules
    report.py   tables, misses, JSON, the command line (4)            console edge

Nothing else in mailsync imports this package. Exit status: 0 whenever the run completes (a
measurement, not a gate), 2 on a harness error.
"""
