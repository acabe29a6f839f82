/* Vocabulary items. */
#include "fc_item.h"

#include <stdlib.h>
#include <string.h>

#include "fc_error.h"

void fc_item_clear(fc_item *it) {
    if (!it) return;
    free(it->term);
    free(it->type);
    for (size_t i = 0; i < it->nextra; i++) {
        free(it->extra[i].name);
        free(it->extra[i].value);
    }
    free(it->extra);
    memset(it, 0, sizeof(*it));
}

int fc_item_add_extra(fc_item *it, const char *name, const char *value) {
    fc_field *f = realloc(it->extra, (it->nextra + 1) * sizeof(*f));
    if (!f) return FC_ENOMEM;
    it->extra = f;
    f[it->nextra].name = strdup(name);
    f[it->nextra].value = strdup(value);
    if (!f[it->nextra].name || !f[it->nextra].value) {
        free(f[it->nextra].name);
        free(f[it->nextra].value);
        return FC_ENOMEM;
    }
    it->nextra++;
    return FC_OK;
}
