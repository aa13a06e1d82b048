"""The people of the load test (bench/load_test.py): team leads and finance, signed
in, reading the dashboard, a project page, the alerts page and the API.

Each simulated user carries the session cookie of one person (made by the script, as
a browser that logged in carries it), then reads pages with a second or so between
them. Leads read their own team's projects; finance reads any. Every answer other
than 200 counts as a failure, and so does a page that is not the one asked for (a
redirect to the login).
"""

import itertools
import json
import os
import random

from locust import FastHttpUser, between, task

SESSIONS = json.loads(os.environ["LOAD_SESSIONS"])
TEAMS = int(os.environ.get("LOAD_TEAMS", "5"))
PROJECTS = int(os.environ.get("LOAD_PROJECTS", "200"))
# Users take turns: four leads of different teams for each finance user.
PERSONAS = itertools.cycle(
    [f"lead{i % TEAMS}@bench.example" for i in range(4)] + ["finance@bench.example"]
)


class PortalUser(FastHttpUser):
    # FastHttpUser (geventhttpclient): the load generator shares the server's two
    # cores, and spends a fraction of the CPU per request that requests would.
    wait_time = between(0.5, 1.5)

    def on_start(self) -> None:
        self.email = next(PERSONAS)
        if self.email.startswith("lead"):
            team = int(self.email[4 : self.email.index("@")])
            # The benchmark's projects go to teams in turn: project i to team i % TEAMS.
            self.slugs = [f"project-{i:03d}" for i in range(team, PROJECTS, TEAMS)]
        else:
            self.slugs = [f"project-{i:03d}" for i in range(PROJECTS)]
        self.cookie = {"Cookie": f"sessionid={SESSIONS[self.email]}"}

    def _page(self, url: str, name: str) -> None:
        with self.client.get(
            url, name=name, headers=self.cookie, catch_response=True
        ) as answer:
            if answer.status_code != 200:
                answer.failure(f"HTTP {answer.status_code}")
            elif "/accounts/login/" in answer.url:
                answer.failure("sent to the login page")

    @task(3)
    def dashboard(self) -> None:
        self._page("/", "dashboard")

    @task(3)
    def project(self) -> None:
        self._page(f"/projects/{random.choice(self.slugs)}/", "project page")

    @task(2)
    def alerts(self) -> None:
        self._page("/alerts/", "alerts page")

    @task(1)
    def api_projects(self) -> None:
        self._page("/api/v1/projects/", "API projects")

    @task(1)
    def api_variance(self) -> None:
        slug = random.choice(self.slugs)
        self._page(f"/api/v1/projects/{slug}/variance/", "API variance")

    @task(1)
    def health(self) -> None:
        # The baseline: gunicorn, the middleware and one query, with no page behind it.
        self._page("/healthz", "healthz (baseline)")
