"""A sample "crawler" script: parses a built-in HTML page (no network) and prints what it found."""
import re
import sys
from html.parser import HTMLParser

PAGE = """<html><head><title>zmqgrid sample page %s</title></head><body>
<a href="/a">A</a> <a href="/b">B</a> <a href="/c">C</a> <p>%s</p></body></html>"""


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.links.extend(v for k, v in attrs if k == "href")


site = sys.argv[sys.argv.index("--site") + 1] if "--site" in sys.argv else "default"
page = PAGE % (site, "lorem ipsum " * 20)
parser = Links()
parser.feed(page)
title = re.search(r"<title>(.*?)</title>", page).group(1)
print(f"site={site} title={title!r} links={len(parser.links)} bytes={len(page)}")
