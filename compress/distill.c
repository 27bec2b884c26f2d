/* SPDX-License-Identifier: Apache-2.0 */
/*
 * distill: a smaller student, trained on the source's outputs.
 *
 * DESIGN: the student is the graph so far with every hidden width scaled
 * ({"width": w}), or with only some of its repeated blocks
 * ({"layers": [0, 2]}, distill_layers.c), or a user's own graph
 * ({"file": "s.onnx"}, the caller loads it and checks it with
 * ss_distill_check_student()).  Then it trains through the loop of
 * finetune.c, the source as the teacher.
 *
 * A width-w student is made by structured pruning at sparsity 1 - w
 * (prune.c, prune_cut.c): the same pairs, the same importance scores,
 * and so the teacher's most important units, their weights and the
 * teacher's biases become the student's initial weights.  That start is
 * far better than a random one: the student begins as the teacher's own
 * best approximation of that size and distillation only has to move it.
 * Importance is measured on data where there is some (activation scores
 * on the calibration data, or on the training data when no calibration
 * data was given), so a unit that rarely fires goes first.  A graph
 * where no width can be scaled (every hidden dimension reaches a
 * residual, a normalization or a reshape) is refused: its student would
 * be the teacher.
 *
 * THREADS: runs on the compress thread.
 */

#include <string.h>

#include "compress/internal.h"
#include "compress/prune_int.h"

static int
same_io(const char *what, int i, const ss_io_info_t *a,
        const ss_io_info_t *b, ss_err_t *err)
{
    int d;

    if (strcmp(a->name, b->name) != 0)
        return ss_err_set(err, SS_EINVAL, "distill: the student's %s %d is "
                          "'%s', the source's '%s'", what, i, b->name,
                          a->name);
    if (a->dtype != b->dtype || a->ndim != b->ndim)
        return ss_err_set(err, SS_EINVAL, "distill: the student's %s '%s' "
                          "differs from the source's in type or rank", what,
                          a->name);
    /* dim 0 is the batch; -1 is a dim the graph leaves open */
    for (d = 1; d < a->ndim; d++)
        if (a->dims[d] != b->dims[d] && a->dims[d] >= 0 && b->dims[d] >= 0)
            return ss_err_set(err, SS_EINVAL, "distill: the student's %s "
                              "'%s' has %lld in dim %d, the source's %lld",
                              what, a->name, (long long)b->dims[d], d,
                              (long long)a->dims[d]);
    return 0;
}

int
ss_distill_check_student(const ss_graph_t *src, const ss_graph_t *student,
                         ss_err_t *err)
{
    int i, rc;

    if (ss_graph_num_inputs(src) != ss_graph_num_inputs(student)
        || ss_graph_num_outputs(src) != ss_graph_num_outputs(student))
        return ss_err_set(err, SS_EINVAL, "distill: the student has %d "
                          "inputs and %d outputs, the source %d and %d",
                          ss_graph_num_inputs(student),
                          ss_graph_num_outputs(student),
                          ss_graph_num_inputs(src),
                          ss_graph_num_outputs(src));
    for (i = 0; i < ss_graph_num_inputs(src); i++)
        if ((rc = same_io("input", i, ss_graph_input(src, i),
                          ss_graph_input(student, i), err)) < 0)
            return rc;
    for (i = 0; i < ss_graph_num_outputs(src); i++)
        if ((rc = same_io("output", i, ss_graph_output(src, i),
                          ss_graph_output(student, i), err)) < 0)
            return rc;
    return 0;
}

#define NO_WIDTH "distill: no hidden width of this model can be scaled " \
    "(each reaches a residual, normalization or reshape): give a student " \
    "file or {\"layers\": [...]}"

/* *g with every prunable hidden width times w. */
static int
scaled(ss__cx_t *cx, const ss_method_t *m, ss_graph_t **g, json_t *snote,
       ss_err_t *err)
{
    ss_method_t p;
    ss__cx_t sub = *cx;
    json_t *cut;
    int rc;

    ss_method_default(&p, SS_METHOD_PRUNE);
    p.u.prune.kind = SS_PRUNE_STRUCTURED;
    p.u.prune.sparsity = 1.0 - m->u.train.width;
    if (sub.calib == NULL)
        sub.calib = cx->train;
    p.u.prune.score = SS_SCORE_ACTIVATION;
    sub.p1 = cx->p0 + 0.1 * (cx->p1 - cx->p0);
    if ((rc = ss__prune(&sub, &p, g, snote, err)) < 0)
        return ss_err_wrap(err, rc, "distill: making the student");
    cut = json_object_get(snote, "pruned");
    if (json_array_size(cut) == 0)
        return ss_err_set(err, SS_EINVAL, "%s", NO_WIDTH);
    return 0;
}

/* At submit (the source is in memory): a width student needs a pair of
 * layers structured pruning can cut (no data needed to find one).  The
 * job prunes the source untied (compress.c, ss__untie_consts), so the
 * check looks at it untied too: an untrained torchvision resnet18 export
 * reads every conv bias (all zero) through Identity nodes of one
 * initializer, and tied, no conv is a layer prune can see. */
int
ss_distill_check_width(const ss_graph_t *src, const ss_method_t *m,
                       ss_err_t *err)
{
    ss__pair_t p;
    ss_graph_t *own = NULL;
    json_t *none = NULL;
    bool found = false;
    int n, rc;

    if (m->kind != SS_METHOD_DISTILL || !(m->u.train.width > 0))
        return 0;
    memset(&p, 0, sizeof(p));
    if (ss__has_tied_consts(src)
        && ((rc = ss_graph_clone(src, &own, err)) < 0
            || (rc = ss__untie_consts(own, &n, err)) < 0))
        goto done;
    if ((none = json_array()) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for a check");
        goto done;
    }
    rc = ss__prune_next_pair(own ? own : src, none, &p, &found, err);
    if (rc == 0 && !found)
        rc = ss_err_set(err, SS_EINVAL, "%s", NO_WIDTH);
done:
    ss__pair_clear(&p);
    json_decref(none);
    ss_graph_free(own);
    return rc;
}

int
ss__distill(ss__cx_t *cx, const ss_method_t *m, ss_graph_t **g,
            json_t *note, ss_err_t *err)
{
    json_t *snote = json_object();
    ss__cx_t sub = *cx;
    ss_graph_t *s = NULL;
    int rc;

    if (snote == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for details");
    if (m->u.train.student != NULL) {
        if ((rc = ss_graph_clone(m->u.train.student, &s, err)) < 0)
            goto done;
        ss_graph_free(*g);
        *g = s;
        json_object_set_new(snote, "file",
                            json_string(m->u.train.student_file));
    } else if (m->u.train.n_layers > 0) {
        if ((rc = ss__distill_layers(m, *g, snote, err)) < 0)
            goto done;
    } else {
        json_object_set_new(snote, "width", json_real(m->u.train.width));
        if ((rc = scaled(cx, m, g, snote, err)) < 0)
            goto done;
        sub.p0 = cx->p0 + 0.1 * (cx->p1 - cx->p0);
    }
    json_object_set_new(snote, "weight_bytes",
                        json_integer((json_int_t)ss_graph_weight_bytes(*g)));
    json_object_set(note, "student", snote);
    rc = ss__train_graph(&sub, m, g, NULL, 0, note, err);
done:
    json_decref(snote);
    return rc;
}
