"""The survey report shows choice and text questions too (issue 13, item 7)."""

from __future__ import annotations

import re

from flask import Flask

from plugins.surveys.analysis import report_html, run_analysis
from tests.plugins.surveys.conftest import answer, customer, days_ago, make_survey


def test_the_report_counts_choices_and_shows_the_latest_texts(surveys_app: Flask) -> None:
    survey = make_survey()
    given = [("web", ["price", "staff"], "Quick <b>delivery</b>", 5),
             ("web", ["price"], "   ", 4),
             ("phone", [], "Friendly staff", 3),
             ("web", ["speed"], None, 2)]
    for i, (channel, liked, comment, age) in enumerate(given):
        values = {"nps": 9 - i, "overall": 4, "channel": channel}
        if liked:
            values["liked"] = liked
        if comment is not None:
            values["comment"] = comment
        answer(survey, customer(f"P{i}"), at=days_ago(age), **values)

    page = report_html(run_analysis(survey.id))
    captions = re.findall(r"<caption>([^<]*)</caption>", page)
    assert "How did you order? (channel; 4 answered)" in captions
    assert "What did you like? (liked; 3 answered)" in captions
    assert "Anything else? (comment; 2 answered)" in captions
    assert re.search(r"<td>Web</td><td class=\"num\">3</td><td>75\.0%</td>", page)
    assert re.search(r"<td>Phone</td><td class=\"num\">1</td><td>25\.0%</td>", page)
    assert re.search(r"<td>Price</td><td class=\"num\">2</td><td>66\.7%</td>", page)
    # The latest answer first; blank answers are not answers; text is escaped.
    latest = page.index("Friendly staff")
    assert latest < page.index("Quick &lt;b&gt;delivery&lt;/b&gt;")
    assert "<b>delivery" not in page
