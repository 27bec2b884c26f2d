/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_SERVER_JOBS_H
#define SS_SERVER_JOBS_H

/*
 * Admin compression jobs, and variant searches (optimize).
 *
 * POST /admin/models/{m}/compress is parsed and checked on the loop
 * thread without touching a file (a bad body is SS_EINVAL and creates no
 * job); the job takes a reference to its source version and waits in a
 * FIFO.  One job thread runs jobs one at a time with its own oneDNN
 * thread budget, so serving goes on: it loads the data (an .npy/.npz in
 * the model's folder -- a regular file, not through a link, within
 * max_data_bytes; a file that cannot be used fails the job with a message
 * naming it -- inline tensors, or the traffic sample ring), runs the
 * compression pipeline
 * (compress/compress.h), writes the variant as a new version folder
 * atomically (a temporary folder, fsync, rename, fsync of the model
 * folder), and, when the gate passed and activation was asked for, hands
 * the activation to the loop thread, which hot-swaps it in.  A cancelled
 * or failed job leaves no version folder and changes no served state;
 * temporary folders left by a killed daemon are removed at start.
 *
 * THREADS: ss_jobs_* are [loop]; the job thread touches a job's fields
 * under the jobs mutex.
 */

#include <sched.h>

#include <jansson.h>
#include <uv.h>

#include "common/err.h"
#include "server/model/registry.h"

typedef struct ss_jobs ss_jobs_t;

/* The default limit of a data file (and of the arrays in it): 1 GiB. */
#define SS_JOBS_DATA_MAX_DEFAULT ((int64_t)1 << 30)

/* cpus (copied; NULL: any) is where the job thread and its oneDNN
 * threads run; max_data_bytes (<= 0: the default) caps a data file. */
int ss_jobs_new(uv_loop_t *loop, ss_registry_t *reg, const char *repo,
                int threads, int64_t max_data_bytes, const cpu_set_t *cpus,
                ss_jobs_t **out, ss_err_t *err);

/*
 * How the job thread and the OpenMP/oneDNN threads it starts are
 * scheduled (config key job_priority).  A job is throughput work; the
 * loops and executors are latency work, and on a machine with few cores
 * they share CPUs with it (job_threads = 0, or a loop thread that the
 * kernel wakes on a job CPU).  Threads inherit their creator's policy and
 * nice value, so setting them on the job thread before its first parallel
 * region covers its whole team.
 *   BATCH   SCHED_BATCH at the daemon's nice + 10 (the default): never
 *           preempts on wake-up and gets about a tenth of a CPU a serving
 *           thread also wants.
 *   IDLE    SCHED_IDLE: runs only on CPU time this daemon's other
 *           threads leave; a waking loop or executor preempts it at once,
 *           and the kernel places wake-ups on a CPU that runs only idle
 *           tasks as on a free one.  With job_threads splitting the
 *           machine, nothing is pinned (server.c): serving may use every
 *           CPU, the job what serving leaves.  The choice for a machine
 *           that serves first and runs little else: on the quiet 2-core
 *           machine the pinned BATCH split cost serving 3.7x its p99 (the
 *           loops, executor and client squeezed onto one CPU).  Not the
 *           default, because beside other busy processes (other cgroups or
 *           sessions) it was not better (bench/compress.py at load 16-35:
 *           busy p99 10-98 ms against 1-54 ms with BATCH; perf traces
 *           show serving threads waiting behind other sessions' tasks,
 *           rarely behind the job: probably the idle task's weight of 3
 *           lowering its group's share of the CPU it runs on), and a
 *           job starved that way holds what it locks for as long (with a
 *           job reading 128 MiB the main loop's own stalls reached 54 and
 *           72 ms under ASan, 3 and 8 ms with BATCH).
 *   NORMAL  as every other thread of the daemon.
 * Lowering one's own priority needs no privilege.
 */
typedef enum {
    SS_JOBS_PRIO_BATCH = 0,
    SS_JOBS_PRIO_IDLE,
    SS_JOBS_PRIO_NORMAL
} ss_jobs_prio_t;

/* "idle", "batch" or "normal" -> 0 and *out, or SS_EINVAL. */
int ss_jobs_prio_parse(const char *s, ss_jobs_prio_t *out);
/* [init] Sets the scheduling of job threads; takes effect from the next
 * job (call it right after ss_jobs_new so that the first job's OpenMP
 * team inherits it). */
void ss_jobs_set_prio(ss_jobs_t *js, ss_jobs_prio_t prio);

/*
 * Pacing (common/pace.h): a job computes while serving is idle and
 * waits, at its pacing points (one op of a training step, one chunk of a
 * calibration or evaluation pass), while serving is active: busy(arg)
 * returns the requests in flight and sets *arrivals to the requests begun
 * so far; the job goes on only after a slice (1 ms) with none in flight
 * and none begun.  It keeps min_share of its wall time: once the time it
 * waited reaches (1 - min_share) / min_share of the time it computed, it
 * computes on however busy serving is, so that a job ends under any
 * load.  min_share 1 turns pacing off; 0 lets a busy server hold a job
 * for as long as the load lasts (cancel still stops it).  Why scheduling
 * policy alone is not enough: common/pace.h.
 * busy is called on the job thread and must be safe there.  [init]
 */
void ss_jobs_set_pace(ss_jobs_t *js,
                      int (*busy)(void *arg, uint64_t *arrivals),
                      void *arg, double min_share);
/* Parses a compress request for model and queues it.  Returns the job id
 * (> 0), or a negative code with err set (SS_EINVAL a bad body,
 * SS_ENOTFOUND an unknown model or version, SS_ENOTREADY not loaded or
 * shutting down). */
int64_t ss_jobs_submit(ss_jobs_t *j, const char *model, const char *body,
                       size_t len, ss_err_t *err);
/* Parses an optimize request (a variant search, compress/search.h) for
 * model and queues it; as ss_jobs_submit.  While it runs, the job's
 * state has "search": trials, the best so far and the Pareto front.
 * Cancelling it stops the search and keeps what it found: the best
 * variant inside the budget is written (and activated when asked) and
 * the job succeeds with "stopped": "cancelled" in its result. */
int64_t ss_jobs_submit_search(ss_jobs_t *j, const char *model,
                              const char *body, size_t len, ss_err_t *err);
/* A job's state as JSON (new reference), or NULL when unknown. */
json_t *ss_jobs_get(ss_jobs_t *j, int64_t id);
/* Every job, newest first. */
json_t *ss_jobs_list(ss_jobs_t *j);
/* Cancels a queued or running job; SS_ENOTFOUND, or SS_ECONFLICT when it
 * has finished already. */
int ss_jobs_cancel(ss_jobs_t *j, int64_t id, ss_err_t *err);
/* [init] Removes what an earlier run left half-written: temporary
 * variant folders, and ".<name>.tmp.XXXXXX" files of atomic writes
 * (config.json, variant files) in the repository, model and version
 * folders.  Only before anything of this process writes there: the
 * temporary names do not say whose they are. */
void ss_jobs_clean_repository(const char *repo);
/* Cancels everything, joins the job thread, frees (loop handles close
 * asynchronously: call while the loop still runs). */
void ss_jobs_free(ss_jobs_t *j);
/* True while a job is running or queued. */
int ss_jobs_busy(ss_jobs_t *j);

#endif
