"""The reproduction report: each claim of Sec. 6 (and beyond the paper, each further method's)
judged from the saved results (`claims`), the report's inputs read in one place (`inputs`), and
the Markdown and JSON written from them (`render`)."""
