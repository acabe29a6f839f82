/* One item's progress through the stages. */
#include "task.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fc_error.h"

void task_init(task *t, fc_item *it, const void *owner, size_t *open) {
    memset(t, 0, sizeof(*t));
    t->item = it;
    t->owner = owner;
    t->open = open;
    t->stage = 1;
    t->state = TASK_IDLE;
    (*open)++;
}

int task_finish(task *t, int outcome) {
    if (t->state == TASK_DONE || outcome <= OUT_NONE || outcome >= OUT_NKINDS) return FC_EINVAL;
    t->state = TASK_DONE;
    t->outcome = outcome;
    t->next = NULL;
    (*t->open)--;
    return FC_OK;
}

void task_fail(task *t, int cls, int status, const char *why) {
    t->err_class = cls;
    t->http_status = status;
    snprintf(t->error, sizeof(t->error), "%s", why);
}

int task_prepare(task *t, const fc_processor *p, int with_key) {
    if (t->request) return FC_OK;
    char *user = NULL;
    const char *prev = t->stage > 1 ? t->results[t->stage - 2] : NULL;
    t->request = p->request(p->self, t->stage, t->item, prev, &user);
    if (t->request && with_key) p->cache_key(p->self, t->stage, user ? user : "", t->cache_key);
    else t->cache_key[0] = '\0';
    free(user);
    return t->request ? FC_OK : FC_ENOMEM;
}

int task_advance(task *t, const fc_processor *p, char *result) {
    free(t->results[t->stage - 1]);
    t->results[t->stage - 1] = result;
    free(t->request);
    t->request = NULL;
    t->cache_key[0] = '\0';
    if (t->stage >= p->nstages) return 1;
    t->stage++;
    return 0;
}

void task_clear(task *t) {
    free(t->request);
    t->request = NULL;
    for (int s = 0; s < FC_STAGES_MAX; s++) {
        free(t->results[s]);
        t->results[s] = NULL;
    }
}
