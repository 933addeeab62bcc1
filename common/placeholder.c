typedef int fmqa_placeholder_unused;
