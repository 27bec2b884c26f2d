/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_SERVER_JOBS_INT_H
#define SS_SERVER_JOBS_INT_H

/* Internals shared by jobs.c (running), jobs_parse.c (parsing),
 * train_job.c and search_job.c (optimize jobs). */

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "common/queue.h"
#include "compress/compress.h"
#include "compress/search.h"
#include "server/jobs/jobs.h"
#include "server/kserve/kserve.h"

#define SS_JOB_MAX_METHODS 8
#define SS_JOB_MAX_INPUTS 64

typedef enum {
    SS__JOB_DATA_NONE = 0,
    SS__JOB_DATA_FILE,
    SS__JOB_DATA_INLINE,
    SS__JOB_DATA_TRAFFIC
} ss__job_data_kind_t;

/* A data source; after loading, inputs/labels hold the tensors (owned). */
typedef struct ss__job_data {
    ss__job_data_kind_t kind;
    char file[256];
    int n;
    ss_tensor_t inputs[SS_JOB_MAX_INPUTS];
    int64_t rows;
    ss_tensor_t labels;
    bool has_labels;
} ss__job_data_t;

typedef enum {
    SS__JOB_QUEUED = 0,
    SS__JOB_RUNNING,
    SS__JOB_SUCCEEDED,
    SS__JOB_REJECTED,
    SS__JOB_FAILED,
    SS__JOB_CANCELLED
} ss__job_state_t;

typedef struct ss__job {
    struct ss_jobs *owner;
    int64_t id;
    char *model;
    ss_version_t *src;          /* held until the job ends */
    ss_method_t methods[SS_JOB_MAX_METHODS];
    int n_methods;
    ss__job_data_t calib, val, train;
    ss_graph_t *students[SS_JOB_MAX_METHODS]; /* distill files, per method;
                                 * owned, loaded by the job thread */
    ss_gate_t gate;
    bool activate;
    json_t *request;            /* the body, for the record */
    atomic_int cancel;
    _Atomic int64_t paced_ns;   /* waited for serving (pace.c); written by
                                 * the job thread, read by the loop */
    char **mpirun;              /* "workers": {"mpirun": [...]}: its
                                 * arguments (owned), n_mpirun of them;
                                 * NULL: the job runs in the daemon */
    int n_mpirun;
    bool search;                /* an optimize job (search_job.c) */
    ss_search_opts_t sopts;     /* its options, set by the parser */

    /* guarded by the jobs lock */
    ss__job_state_t state;
    double progress;
    char step[64];
    char error[SS_ERR_MSG_MAX];
    json_t *result;
    int64_t new_version;
    ss_train_progress_t tp;     /* training methods: the last report */
    bool has_tp;
    json_t *search_state;       /* optimize: the last report, or NULL */
    double created, started, finished;

    struct ss__job *next;           /* all jobs, newest first */
    /* In the run queue while queued, then in the activation queue while
     * its variant waits for the loop; owned by the queue it is in. */
    ss_qlink_t qlink;
} ss__job_t;

/* The jobs of a daemon (jobs.c). */
struct ss_jobs {
    uv_loop_t *loop;
    ss_registry_t *reg;
    char *repo;
    int threads;
    int64_t max_data_bytes;     /* a data file and its arrays */

    pthread_mutex_t lock;
    ss__job_t *all;                 /* newest first; guarded by lock */
    ss_queue_t runq;            /* queued jobs, oldest first */
    ss_queue_t actq;            /* variants for the loop to activate */
    bool stop;                  /* guarded by lock */
    int64_t next_id;
    pthread_t thread;
    uv_async_t async;
    bool pin;
    cpu_set_t cpus;
    ss_jobs_prio_t prio;        /* [init]; applied by the job thread */
    ss_jobs_prio_t applied;     /* job thread only */
    /* [init] pacing (jobs.h); NULL: none */
    int (*busy)(void *arg, uint64_t *arrivals);
    void *busy_arg;
    double min_share;           /* [init] */
};

/* The pacing state of the running job (pace.c), job thread only. */
typedef struct ss__pace {
    ss_jobs_t *js;
    ss__job_t *j;
    int64_t last_ns;            /* when the job last went on computing */
    int64_t run_ns, wait_ns;    /* computed, waited, since it started */
    uint64_t seen;              /* serving's arrivals at the last look */
    int64_t active_ns;          /* when serving was last seen active */
} ss__pace_t;

/* Installs (j != NULL) or removes the calling job thread's pace hook. */
void ss__jobs_pace_begin(ss__pace_t *p, ss_jobs_t *js, ss__job_t *j);
void ss__jobs_pace_end(ss__pace_t *p);

int ss__jobs_parse(ss__job_t *j, json_t *root, ss_err_t *err);
/* "workers" (mpi_job.c): checks it and the job's data sources, refuses
 * it without MPI, mpirun or slimserve-train [loop]; runs the job through
 * mpirun and slimserve-train and ends it [job thread]; frees the
 * arguments. */
int ss__jobs_mpi_parse(ss__job_t *j, json_t *workers, ss_err_t *err);
void ss__jobs_mpi_run(ss_jobs_t *js, ss__job_t *j);
void ss__jobs_mpi_clear(ss__job_t *j);
/* A data source of a request body (jobs_parse.c): what is the source's
 * name in messages ("calibration"). */
int ss__jobs_parse_data(ss__job_t *j, json_t *v, const char *what,
                        ss__job_data_t *d, ss_err_t *err);

/* What search_job.c shares with jobs.c [job thread unless said]. */
double ss__jobs_wall(void);
void ss__jobs_data_clear(ss__job_data_t *d);
int ss__jobs_load_data(ss_jobs_t *js, ss__job_t *j, ss__job_data_t *d,
                       ss_err_t *err);
void ss__jobs_as_dataset(const ss__job_data_t *d, ss_dataset_t *out);
void ss__jobs_on_progress(void *arg, double fraction, const char *step);
void ss__jobs_on_train(void *arg, const ss_train_progress_t *p);
/* Ends j in state st with result (taken) and error (NULL: none). */
void ss__jobs_finish(ss_jobs_t *js, ss__job_t *j, ss__job_state_t st,
                     json_t *result, const char *error);
int ss__jobs_pin_active(ss_jobs_t *js, ss__job_t *j, ss_err_t *err);
/* Writes graph and variant (its variant.json, borrowed) as the next
 * version folder; with stop_on_cancel a cancel before the rename aborts
 * it (SS_ECANCELED). */
int ss__jobs_write_version(ss_jobs_t *js, ss__job_t *j,
                           const ss_graph_t *graph, json_t *variant,
                           bool stop_on_cancel, int64_t *version,
                           ss_err_t *err);
/* Writes adapter a into the active version's adapters/ folder (replacing
 * one of that name atomically) and loads it where the version serves
 * adapters; result gets "adapter" and "loaded". */
int ss__jobs_write_adapter(ss_jobs_t *js, ss__job_t *j,
                           const ss_lora_adapter_t *a, json_t *result,
                           ss_err_t *err);
/* After a version was written: hands it to the loop for activation when
 * the job asked, else ends the job as succeeded; takes result. */
void ss__jobs_written(ss_jobs_t *js, ss__job_t *j, json_t *result,
                      int64_t version);
/* Optimize jobs (search_job.c): the body [loop]; the run. */
int ss__jobs_search_parse(ss__job_t *j, json_t *root, ss_err_t *err);
void ss__jobs_search_run(ss_jobs_t *js, ss__job_t *j);
/* Training methods (train_job.c): loads and checks distill's student
 * files [job thread]; frees them; the last progress report as JSON
 * (under the jobs lock; NULL when there is none). */
int ss__jobs_train_load(ss__job_t *j, const char *repo, int64_t max_bytes,
                        ss_err_t *err);
void ss__jobs_train_clear(ss__job_t *j);
json_t *ss__jobs_training_json(const ss__job_t *j);
/* Lays decoded tensors out in graph input order into d. */
int ss__jobs_bind_inputs(const ss_graph_t *g, const ss_kserve_request_t *kr,
                         ss__job_data_t *d, ss_err_t *err);

#endif
