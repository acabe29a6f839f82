/* flashcard-admin: the operator's command. Reads the settings every binary takes (fc_config), checks
 * the command line, and runs one subcommand: status, job, dead list|replay|purge, cancel, results. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "admin.h"
#include "fc_error.h"
#include "fc_http.h"
#include "fc_log.h"
#include "fc_message.h"

/* The flags beyond the settings, and which subcommands take them. */
enum { F_JOB = 1, F_REASON = 2, F_LIMIT = 4, F_RATE = 8, F_YES = 16, F_OUTPUT = 32 };

typedef struct command {
    const char *name;     /* "dead replay" for a subcommand of dead */
    int nargs;            /* positional arguments after the name (a JOB_ID) */
    int flags;            /* F_* it takes (--json: all) */
    const char *usage;
    const char *help;
} command;

static const command commands[] = {
    {"status", 0, 0, "status [--json]",
     "The queues of QUEUE_PREFIX (ready, unacked, consumers: from the management API, else from the broker\n"
     "with unacked unknown), the live workers (id, host, pid, version, started, calls in flight, items,\n"
     "last error, ready or why not), each API's fleet rate limit, usage and breaker, and every job not\n"
     "finished (published, done, ok, failed, in retry, rate, ETA). Reads only.\n"},
    {"job", 1, 0, "job JOB_ID [--json]",
     "One job in detail: its state, items, outcomes, rate and ETA, API calls and tokens, and its failed\n"
     "items (position, term, error class, HTTP status, attempts, last error). Exit 1 if there is no such\n"
     "job (or its record expired after 7 days).\n"},
    {"dead list", 0, F_JOB | F_REASON | F_LIMIT, "dead list [--job ID] [--reason CLASS] [--limit N] [--json]",
     "The dead-lettered items in P.dead with their reasons. Removes and reorders nothing: the messages\n"
     "are read without an ack and go back when the command ends (a quorum queue counts that as a\n"
     "redelivery; P.dead has no delivery limit). Poison messages (not a batch) are listed as such; copies\n"
     "of one dead letter once. The table shows at most 1000 items (--json shows every one); --limit\n"
     "counts items. Exit 1 if nothing matched.\n"},
    {"dead replay", 0, F_JOB | F_REASON | F_LIMIT | F_RATE,
     "dead replay [--job ID] [--reason CLASS] [--limit N] [--rate N] [--json]",
     "Sends the selected items back to P.batches as batches, attempts reset, after taking them out of\n"
     "their job's outcome and failed records (a waiting producer waits for them again; the job's results\n"
     "queue is declared again, so late results of a finished job wait for `results`). A dead letter is\n"
     "removed only once its replacement is confirmed (one that is only partly selected is split: the\n"
     "rest goes back to P.dead). A replay killed at any point loses nothing; run it again: a marker per\n"
     "dead letter (P:replayed:<hash>, 7 days) lets it finish what was begun without sending it twice.\n"
     "A dead letter the broker refuses, or does not confirm within 30 s, stays, its items' records put\n"
     "back. Poison messages, dead letters of cancelled jobs and cancelled items (unless --reason\n"
     "cancelled) are skipped. --limit counts items; --rate caps dead letters sent per second. Exit 1 if\n"
     "nothing was replayed, or something selected was left (failed, skipped, not started).\n"},
    {"dead purge", 0, F_JOB | F_REASON | F_LIMIT | F_YES,
     "dead purge [--job ID] [--reason CLASS] [--limit N] --yes [--json]",
     "Removes the selected items from P.dead for good (poison messages included; a dead letter only\n"
     "partly selected is split, the rest going back). Without --yes it lists what it would remove,\n"
     "removes nothing and exits 2.\n"},
    {"cancel", 1, 0, "cancel JOB_ID [--json]",
     "Marks the job cancelled: workers skip its batches and dead-letter their items with class\n"
     "'cancelled'; a producer waiting for it ends with exit 1. Exit 1 if there is no such job or it has\n"
     "already finished.\n"},
    {"results", 1, F_OUTPUT, "results JOB_ID --output FILE [--json]",
     "Collects the results of a job that came after its producer stopped waiting (replayed items): from\n"
     "P.results.<job> and P.results.unrouted into FILE, a new file (Anki TSV, or JSON Lines if it ends in\n"
     ".jsonl), each position once; they are removed from the queues once FILE is synced. Refused while\n"
     "a producer waits for the job. Exit 1 if none are waiting.\n"},
};

#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static const char exit_codes[] =
    "Exit codes: 0 done; 1 done with something to report (nothing matched, no such job, already finished,\n"
    "selected dead letters left); 2 bad command line or settings, or purge without --yes; 3 the broker or\n"
    "Redis cannot be reached, or was lost part-way.\n";

static void print_usage(void) {
    printf("Usage: flashcard-admin COMMAND [options]\nOperates the fleet of QUEUE_PREFIX.\n\nCommands:\n");
    for (size_t i = 0; i < NCOMMANDS; i++) printf("  flashcard-admin %s\n", commands[i].usage);
    printf("\nTables on a terminal; --json prints JSON for scripts; `flashcard-admin COMMAND --help` tells more.\n"
           "CLASS is one of %s.\n%s\n", admin_reason_list(), exit_codes);
    fc_config_print_settings(FC_ADMIN);
}

/* find returns the command named by word (and sub for dead), or NULL. */
static const command *find(const char *word, const char *sub) {
    char name[64];
    snprintf(name, sizeof(name), "%s%s%s", word, sub && strcmp(word, "dead") == 0 ? " " : "",
             sub && strcmp(word, "dead") == 0 ? sub : "");
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0) return &commands[i];
    return NULL;
}

/* help prints the help of the command argv names, if any, else the usage. */
static void help(int argc, char **argv) {
    const char *words[2] = {NULL, NULL};
    int n = 0;
    for (int i = 1; i < argc && n < 2; i++)
        if (argv[i][0] != '-') words[n++] = argv[i];
    const command *c = words[0] ? find(words[0], words[1]) : NULL;
    if (!c && words[0] && strcmp(words[0], "dead") == 0) {
        printf("Usage:\n");
        for (size_t i = 0; i < NCOMMANDS; i++)
            if (strncmp(commands[i].name, "dead ", 5) == 0) printf("  flashcard-admin %s\n", commands[i].usage);
        printf("\n%s", exit_codes);
        return;
    }
    if (!c) {
        print_usage();
        return;
    }
    printf("Usage: flashcard-admin %s\n\n%s", c->usage, c->help);
    if (c->flags & F_REASON) printf("CLASS is one of %s.\n", admin_reason_list());
    printf("\n%s\nSettings: the connection settings of `flashcard-admin --help` (AMQP_URL, REDIS_URL, "
           "QUEUE_PREFIX, ...).\n", exit_codes);
}

/* check_flags refuses a flag the command does not take. */
static int check_flags(const fc_config *cfg, const command *c) {
    static const struct {
        int flag;
        const char *name;
    } names[] = {{F_JOB, "--job"}, {F_REASON, "--reason"}, {F_LIMIT, "--limit"}, {F_RATE, "--rate"},
                 {F_YES, "--yes"}, {F_OUTPUT, "--output"}};
    int given = (cfg->admin_job ? F_JOB : 0) | (cfg->admin_reason ? F_REASON : 0) | (cfg->admin_limit ? F_LIMIT : 0) |
                (cfg->admin_rate > 0 ? F_RATE : 0) | (cfg->admin_yes ? F_YES : 0) | (cfg->output ? F_OUTPUT : 0);
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if ((given & names[i].flag) && !(c->flags & names[i].flag)) {
            admin_say("%s is not an option of '%s' (see flashcard-admin %s --help)", names[i].name, c->name, c->name);
            return ADMIN_USAGE;
        }
    return ADMIN_OK;
}

/* parse finds the command in the positional arguments; NULL after one line. */
static const command *parse(const fc_config *cfg, const char **job_id) {
    if (cfg->nargs == 0) {
        admin_say("no command given (status, job, dead, cancel, results); see --help");
        return NULL;
    }
    int dead = strcmp(cfg->args[0], "dead") == 0;
    const command *c = find(cfg->args[0], dead && cfg->nargs > 1 ? cfg->args[1] : NULL);
    if (!c) {
        if (dead) admin_say("dead needs one of list, replay, purge; see flashcard-admin dead --help");
        else admin_say("unknown command '%s'; see --help", cfg->args[0]);
        return NULL;
    }
    int used = 1 + dead;
    if (cfg->nargs != used + c->nargs) {
        admin_say("usage: flashcard-admin %s", c->usage);
        return NULL;
    }
    *job_id = c->nargs ? cfg->args[used] : NULL;
    if (*job_id && !fc_job_id_valid(*job_id)) {
        admin_say("'%s' is not a job id (1..64 of A-Z a-z 0-9 - _ .)", *job_id);
        return NULL;
    }
    return check_flags(cfg, c) == ADMIN_OK ? c : NULL;
}

static int run(admin *ad, const command *c, const char *job_id) {
    if (strcmp(c->name, "status") == 0) return admin_status(ad);
    if (strcmp(c->name, "job") == 0) return admin_job(ad, job_id);
    if (strcmp(c->name, "cancel") == 0) return admin_cancel(ad, job_id);
    if (strcmp(c->name, "results") == 0) return admin_results(ad, job_id);
    return admin_dead(ad, c->name + 5);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            help(argc, argv);
            return ADMIN_OK;
        }
    fc_config cfg;
    char err[512];
    int rc = fc_config_load(&cfg, FC_ADMIN, argc, argv, err, sizeof(err));
    if (rc == 1) return ADMIN_OK;
    const char *job_id = NULL;
    const command *c = NULL;
    if (rc != FC_OK) admin_say("%s", err);
    else c = parse(&cfg, &job_id);
    if (!c) {
        fc_config_free(&cfg);
        return ADMIN_USAGE;
    }
    fc_log_setup(fc_log_level_parse(cfg.log_level), strcmp(cfg.log_format, "json") ? FC_LOG_TEXT : FC_LOG_JSON,
                 "flashcard-admin");
    signal(SIGPIPE, SIG_IGN);
    fc_http_global_init();
    admin ad = {&cfg, c->name, NULL, NULL};
    rc = run(&ad, c, job_id);
    admin_disconnect(&ad);
    fc_http_global_cleanup();
    fc_config_free(&cfg);
    return rc;
}
