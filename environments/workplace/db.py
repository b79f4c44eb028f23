"""The workplace database: a seeded SQLite database of people, tickets,
meetings, rooms, projects and messages, copied fresh for every episode.

Every statement here and in ``tools.py`` is parameterised: table and column
names come from this code, values from the model only ever travel as bound
parameters, so a tool argument cannot change what SQL runs.
"""

from __future__ import annotations

import random
import sqlite3

SCHEMA = """
CREATE TABLE people (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, email TEXT NOT NULL UNIQUE,
    team TEXT NOT NULL, title TEXT NOT NULL, manager_email TEXT
);
CREATE TABLE tickets (
    id INTEGER PRIMARY KEY AUTOINCREMENT, title TEXT NOT NULL, assignee TEXT NOT NULL REFERENCES people(email),
    priority TEXT NOT NULL CHECK (priority IN ('low', 'medium', 'high')),
    status TEXT NOT NULL CHECK (status IN ('open', 'in_progress', 'resolved', 'closed'))
);
CREATE TABLE comments (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ticket_id INTEGER NOT NULL REFERENCES tickets(id), text TEXT NOT NULL
);
CREATE TABLE rooms (name TEXT PRIMARY KEY, capacity INTEGER NOT NULL);
CREATE TABLE meetings (
    id INTEGER PRIMARY KEY AUTOINCREMENT, title TEXT NOT NULL, day TEXT NOT NULL, hour INTEGER NOT NULL,
    room TEXT NOT NULL REFERENCES rooms(name)
);
CREATE TABLE attendees (
    meeting_id INTEGER NOT NULL REFERENCES meetings(id) ON DELETE CASCADE,
    email TEXT NOT NULL REFERENCES people(email), PRIMARY KEY (meeting_id, email)
);
CREATE TABLE projects (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, owner TEXT NOT NULL REFERENCES people(email),
    status TEXT NOT NULL CHECK (status IN ('planned', 'active', 'on_hold', 'done'))
);
CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, recipient TEXT NOT NULL, text TEXT NOT NULL);
"""

FIRST = ["Ada", "Ben", "Cleo", "Dan", "Eva", "Finn", "Gia", "Hugo", "Ivy", "Jon", "Kai", "Lena",
         "Max", "Nora", "Omar", "Pia", "Raj", "Sara", "Tom", "Uma", "Vic", "Wes", "Yara", "Zoe"]
LAST = ["Lee", "Diaz", "Kim", "Roy", "Park", "Shaw", "Cole", "Ford", "Gray", "Hart", "Lane", "Moss"]
TEAMS = ["infra", "sales", "design", "finance"]
TITLES = ["engineer", "analyst", "designer", "lead"]
ROOMS = [("atlas", 4), ("birch", 8), ("cedar", 12), ("delta", 20)]
DAYS = ["mon", "tue", "wed", "thu", "fri"]
HOURS = list(range(9, 18))
PRIORITIES = ["low", "medium", "high"]
STATUSES = ["open", "in_progress", "resolved", "closed"]
PROJECT_STATUSES = ["planned", "active", "on_hold", "done"]
TICKET_TOPICS = ["VPN down", "Laptop slow", "Badge broken", "Invoice error", "Printer jam", "Login fails",
                 "Disk full", "Email bounce", "Screen flicker", "Access request", "Wifi drops", "Build red"]
PROJECT_NAMES = ["apollo", "borealis", "comet", "dynamo", "ember", "falcon", "granite", "horizon"]

# Tables compared for the reward, and the columns that identify a row's
# content (surrogate ids of pure logs are left out: the order two messages
# were sent in does not matter).
STATE = {
    "people": "id, name, email, team, title, manager_email",
    "tickets": "id, title, assignee, priority, status",
    "comments": "ticket_id, text",
    "meetings": "id, title, day, hour, room",
    "attendees": "meeting_id, email",
    "projects": "id, name, owner, status",
    "messages": "recipient, text",
}


def email_of(name: str) -> str:
    first, last = name.lower().split()
    return f"{first}.{last}@acme.test"


def build(seed: int, people: int = 24, tickets: int = 30, meetings: int = 8, projects: int = 8) -> sqlite3.Connection:
    """The seeded template database (in memory)."""
    rng = random.Random(seed)
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    conn.executescript(SCHEMA)
    names = rng.sample([f"{f} {l}" for f in FIRST for l in LAST], people)
    leads = {team: names[i] for i, team in enumerate(TEAMS)}
    for i, name in enumerate(names, 1):
        team = TEAMS[(i - 1) % len(TEAMS)]
        title = "lead" if leads[team] == name else rng.choice(TITLES[:-1])
        manager = None if title == "lead" else email_of(leads[team])
        conn.execute("INSERT INTO people VALUES (?, ?, ?, ?, ?, ?)", (i, name, email_of(name), team, title, manager))
    conn.executemany("INSERT INTO rooms VALUES (?, ?)", ROOMS)
    emails = [email_of(n) for n in names]
    for _ in range(tickets):
        conn.execute("INSERT INTO tickets (title, assignee, priority, status) VALUES (?, ?, ?, ?)",
                     (rng.choice(TICKET_TOPICS), rng.choice(emails), rng.choice(PRIORITIES),
                      rng.choice(STATUSES)))
    for _ in range(meetings):
        cur = conn.execute("INSERT INTO meetings (title, day, hour, room) VALUES (?, ?, ?, ?)",
                           (rng.choice(["sync", "review", "planning", "retro"]), rng.choice(DAYS),
                            rng.choice(HOURS), rng.choice(ROOMS)[0]))
        for email in rng.sample(emails, 3):
            conn.execute("INSERT INTO attendees VALUES (?, ?)", (cur.lastrowid, email))
    for i, name in enumerate(rng.sample(PROJECT_NAMES, projects), 1):
        conn.execute("INSERT INTO projects VALUES (?, ?, ?, ?)", (i, name, rng.choice(emails),
                                                                 rng.choice(PROJECT_STATUSES)))
    conn.commit()
    return conn


def copy(template: sqlite3.Connection) -> sqlite3.Connection:
    """A fresh, independent copy of ``template`` (SQLite's online backup)."""
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    template.backup(conn)
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def snapshot(conn: sqlite3.Connection) -> dict[str, list[tuple]]:
    """The database state the reward compares: every table's rows, sorted."""
    return {table: sorted(conn.execute(f"SELECT {cols} FROM {table}").fetchall(), key=repr)  # noqa: S608 - fixed names
            for table, cols in STATE.items()}
