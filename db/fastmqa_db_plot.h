/*
 * fastmqa_db_plot.h -- `fastmqa-db plot` (fastmqa_db_plot.c), kept out of
 * fastmqa_db.c because it draws.
 */
#ifndef FMQA_DB_PLOT_H
#define FMQA_DB_PLOT_H

#include <stdio.h>

#include "db.h"

/*
 * Writes DIR/problem-P-device-D.svg for every problem P (or only problem_id
 * when > 0) and device D with trials: each trial's median with its p20-p80
 * spread over its config (configs fastest first), the best entry ringed, the
 * template default's trials marked with a diamond, trials without a time in
 * a band per status.  Names each file written on `report`.
 * FMQA_ERR_NOT_FOUND when there is no trial to plot, FMQA_ERR_IO when a file
 * cannot be written.
 */
fmqa_status db_plot_write(db_t *db, const char *dir, int64_t problem_id, FILE *report,
                          fmqa_err *err);

#endif /* FMQA_DB_PLOT_H */
