"""Sealed grading (``python -m workbook grade``): only the learner's files count, and learner code
cannot reach the judge or the reference.

- ``tree``: a fresh grading tree from the teacher's copy plus only the submission's exercise files;
- ``run``: each stage judged in its own isolated child, prerequisites the learner did not write
  served by the reference;
- ``judge``: the child — the reference loaded out of reach, then the check;
- ``guard``: the audit hook and integrity snapshot that make tampering visible.
"""
