/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_SERVER_JOBS_INT_H
#define SS_SERVER_JOBS_INT_H

/* Internals shared by jobs.c (running) and jobs_parse.c (parsing). */

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "common/queue.h"
#include "compress/compress.h"
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

    /* guarded by the jobs lock */
    ss__job_state_t state;
    double progress;
    char step[64];
    char error[SS_ERR_MSG_MAX];
    json_t *result;
    int64_t new_version;
    ss_train_progress_t tp;     /* training methods: the last report */
    bool has_tp;
    double created, started, finished;

    struct ss__job *next;           /* all jobs, newest first */
    /* In the run queue while queued, then in the activation queue while
     * its variant waits for the loop; owned by the queue it is in. */
    ss_qlink_t qlink;
} ss__job_t;

int ss__jobs_parse(ss__job_t *j, json_t *root, ss_err_t *err);
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
