/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_HTTP_UI_H
#define SS_HTTP_UI_H

#include <stddef.h>

/* The admin page (HTML with its script; static, never freed) and its
 * length.  [any] */
const char *ss_ui_page(size_t *len);

#endif
