/* Descriptions of the project's error codes, generated from FC_ERRNO_MAP. */
#include "fc_error.h"

const char *fc_strerror(int code) {
    switch (code) {
    case FC_OK: return "success";
#define FC_ERR_CASE(name, msg) case FC_E##name: return msg;
    FC_ERRNO_MAP(FC_ERR_CASE)
#undef FC_ERR_CASE
    default: return "unknown error";
    }
}
