#!/usr/bin/env python3
"""svg_marks.py FILE: parses an SVG written by plot_svg_write with the
standard library's XML parser (a file that is not well-formed XML fails with
exit 1) and prints one line per mark, CLASSES<TAB>SERIES<TAB>TITLE, then
'marks N' and, per reference line, 'line Y-LABEL'."""
import sys
import xml.etree.ElementTree as ET

NS = "{http://www.w3.org/2000/svg}"
try:
    root = ET.parse(sys.argv[1]).getroot()
except ET.ParseError as e:
    sys.exit("%s: not well-formed XML: %s" % (sys.argv[1], e))
if root.tag != NS + "svg":
    sys.exit("%s: root element is %s, not svg" % (sys.argv[1], root.tag))
marks = 0
for g in root.iter(NS + "g"):
    classes = g.get("class", "").split()
    if "mark" not in classes:
        continue
    marks += 1
    title = g.find(NS + "title")
    print(" ".join(classes), g.get("data-series"), title.text if title is not None else "",
          sep="\t")
print("marks", marks)
for line in root.iter(NS + "line"):
    if line.get("class") == "ref":
        print("line", line.get("y1"))
