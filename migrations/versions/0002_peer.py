"""Peer practice: questions, requests, matches, collaboration sessions.

Revision ID: 0002_peer
Revises: 0001_platform
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002_peer"
down_revision: str | None = "0001_platform"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "questions",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("difficulty", sa.Text(), nullable=False),
        sa.Column("topics", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_questions")),
    )
    op.create_index(
        "ix_questions_topics", "questions", ["topics"], unique=False, postgresql_using="gin"
    )
    op.create_table(
        "match_requests",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("difficulty", sa.Text(), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="pending", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("match_id", sa.Uuid(), nullable=True),
        sa.Column("requeued_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_match_requests_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_match_requests")),
    )
    op.create_index(
        "ix_match_requests_pending_pool",
        "match_requests",
        ["difficulty", "topic", "created_at"],
        unique=False,
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_match_requests_pending_created",
        "match_requests",
        ["created_at"],
        unique=False,
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "uq_match_requests_open_user",
        "match_requests",
        ["user_id"],
        unique=True,
        postgresql_where=sa.text("status IN ('pending', 'matched')"),
    )
    op.create_table(
        "matches",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("user_a", sa.BigInteger(), nullable=False),
        sa.Column("user_b", sa.BigInteger(), nullable=False),
        sa.Column("difficulty", sa.Text(), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="pending_confirmation", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("confirm_deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("session_id", sa.Uuid(), nullable=True),
        sa.Column("request_a", sa.Uuid(), nullable=True),
        sa.Column("request_b", sa.Uuid(), nullable=True),
        sa.Column("confirmed_a", sa.Boolean(), nullable=True),
        sa.Column("confirmed_b", sa.Boolean(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_matches")),
    )
    op.create_index(
        "ix_matches_open_deadline",
        "matches",
        ["confirm_deadline"],
        unique=False,
        postgresql_where=sa.text("status = 'pending_confirmation'"),
    )
    op.create_table(
        "collab_sessions",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("match_id", sa.Uuid(), nullable=False),
        sa.Column("question_id", sa.BigInteger(), nullable=True),
        sa.Column("language", sa.Text(), server_default="python", nullable=False),
        sa.Column("user_ids", postgresql.ARRAY(sa.BigInteger()), nullable=False),
        sa.Column("status", sa.Text(), server_default="active", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["match_id"], ["matches.id"], name=op.f("fk_collab_sessions_match_id_matches")
        ),
        sa.ForeignKeyConstraint(
            ["question_id"], ["questions.id"], name=op.f("fk_collab_sessions_question_id_questions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_collab_sessions")),
        sa.UniqueConstraint("match_id", name=op.f("uq_collab_sessions_match_id")),
    )
    op.create_index(
        "ix_collab_sessions_question_id", "collab_sessions", ["question_id"], unique=False
    )
    op.create_index(
        "ix_collab_sessions_active",
        "collab_sessions",
        ["id"],
        unique=False,
        postgresql_where=sa.text("status = 'active'"),
    )
    op.create_table(
        "peer_declines",
        sa.Column("user_low", sa.BigInteger(), nullable=False),
        sa.Column("user_high", sa.BigInteger(), nullable=False),
        sa.Column(
            "declined_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("user_low < user_high", name=op.f("ck_peer_declines_ordered_pair")),
        sa.ForeignKeyConstraint(
            ["user_low"], ["users.id"], name=op.f("fk_peer_declines_user_low_users")
        ),
        sa.ForeignKeyConstraint(
            ["user_high"], ["users.id"], name=op.f("fk_peer_declines_user_high_users")
        ),
        sa.PrimaryKeyConstraint("user_low", "user_high", name=op.f("pk_peer_declines")),
    )
    op.create_index("ix_peer_declines_declined_at", "peer_declines", ["declined_at"], unique=False)
    load_question_bank()


def load_question_bank() -> None:
    """Insert the starter questions that are not there yet (matched by title)."""
    rows = [
        {"title": title, "difficulty": difficulty, "topics": list(topics)}
        for title, difficulty, topics in QUESTION_BANK
    ]
    op.get_bind().execute(
        sa.text(
            "INSERT INTO questions (title, difficulty, topics) "
            "SELECT b.title, b.difficulty, b.topics "
            "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) "
            "AS b(title text, difficulty text, topics text[]) "
            "WHERE NOT EXISTS (SELECT 1 FROM questions q WHERE q.title = b.title)"
        ),
        {"rows": json.dumps(rows)},
    )


def downgrade() -> None:
    op.drop_table("peer_declines")
    op.drop_table("collab_sessions")
    op.drop_table("matches")
    op.drop_table("match_requests")
    op.drop_table("questions")


# The starter bank: three questions for every difficulty of a dozen topics. A question
# lists every topic it fits, so a pool finds it by any of them.
QUESTION_BANK: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("Two Sum", "Easy", ("arrays", "hash-tables")),
    ("Best Time to Buy and Sell Stock", "Easy", ("arrays", "greedy")),
    ("Move Zeroes", "Easy", ("arrays",)),
    ("Product of Array Except Self", "Medium", ("arrays",)),
    ("Rotate Array", "Medium", ("arrays", "math")),
    ("Subarray Sum Equals K", "Medium", ("arrays", "hash-tables")),
    ("First Missing Positive", "Hard", ("arrays", "hash-tables")),
    ("Trapping Rain Water", "Hard", ("arrays", "dynamic-programming")),
    ("Sliding Window Maximum", "Hard", ("arrays",)),
    ("Valid Anagram", "Easy", ("strings", "hash-tables", "sorting")),
    ("Reverse String", "Easy", ("strings", "recursion")),
    ("Longest Common Prefix", "Easy", ("strings",)),
    ("Longest Substring Without Repeating Characters", "Medium", ("strings", "hash-tables")),
    ("Group Anagrams", "Medium", ("strings", "hash-tables", "sorting")),
    ("Longest Palindromic Substring", "Medium", ("strings", "dynamic-programming")),
    ("Minimum Window Substring", "Hard", ("strings", "hash-tables")),
    ("Edit Distance", "Hard", ("strings", "dynamic-programming")),
    ("Regular Expression Matching", "Hard", ("strings", "dynamic-programming", "recursion")),
    ("Contains Duplicate", "Easy", ("hash-tables", "arrays")),
    ("Ransom Note", "Easy", ("hash-tables", "strings")),
    ("Happy Number", "Easy", ("hash-tables", "math")),
    ("Top K Frequent Elements", "Medium", ("hash-tables", "sorting")),
    ("Longest Consecutive Sequence", "Medium", ("hash-tables", "arrays")),
    ("LRU Cache", "Medium", ("hash-tables", "linked-lists")),
    ("LFU Cache", "Hard", ("hash-tables", "linked-lists")),
    ("Substring with Concatenation of All Words", "Hard", ("hash-tables", "strings")),
    ("Max Points on a Line", "Hard", ("hash-tables", "math")),
    ("Maximum Depth of Binary Tree", "Easy", ("trees", "recursion")),
    ("Invert Binary Tree", "Easy", ("trees", "recursion")),
    ("Symmetric Tree", "Easy", ("trees",)),
    ("Validate Binary Search Tree", "Medium", ("trees", "recursion")),
    ("Binary Tree Level Order Traversal", "Medium", ("trees", "graphs")),
    ("Lowest Common Ancestor of a Binary Tree", "Medium", ("trees", "recursion")),
    ("Binary Tree Maximum Path Sum", "Hard", ("trees", "recursion")),
    ("Serialize and Deserialize Binary Tree", "Hard", ("trees", "strings")),
    ("Vertical Order Traversal of a Binary Tree", "Hard", ("trees", "sorting")),
    ("Flood Fill", "Easy", ("graphs", "recursion")),
    ("Find the Town Judge", "Easy", ("graphs",)),
    ("Find if Path Exists in Graph", "Easy", ("graphs",)),
    ("Number of Islands", "Medium", ("graphs", "recursion")),
    ("Course Schedule", "Medium", ("graphs",)),
    ("Clone Graph", "Medium", ("graphs", "hash-tables")),
    ("Word Ladder", "Hard", ("graphs", "strings")),
    ("Alien Dictionary", "Hard", ("graphs", "strings")),
    ("Critical Connections in a Network", "Hard", ("graphs",)),
    ("Climbing Stairs", "Easy", ("dynamic-programming", "recursion")),
    ("Fibonacci Number", "Easy", ("dynamic-programming", "recursion", "math")),
    ("Min Cost Climbing Stairs", "Easy", ("dynamic-programming",)),
    ("Coin Change", "Medium", ("dynamic-programming",)),
    ("Longest Increasing Subsequence", "Medium", ("dynamic-programming", "binary-search")),
    ("House Robber", "Medium", ("dynamic-programming",)),
    ("Burst Balloons", "Hard", ("dynamic-programming",)),
    ("Longest Valid Parentheses", "Hard", ("dynamic-programming", "strings")),
    ("Distinct Subsequences", "Hard", ("dynamic-programming", "strings")),
    ("Merge Sorted Array", "Easy", ("sorting", "arrays")),
    ("Sort Array By Parity", "Easy", ("sorting", "arrays")),
    ("Relative Sort Array", "Easy", ("sorting", "hash-tables")),
    ("Sort Colors", "Medium", ("sorting", "arrays")),
    ("Merge Intervals", "Medium", ("sorting", "arrays")),
    ("Kth Largest Element in an Array", "Medium", ("sorting",)),
    ("Count of Smaller Numbers After Self", "Hard", ("sorting", "binary-search")),
    ("Reverse Pairs", "Hard", ("sorting", "recursion")),
    ("Maximum Gap", "Hard", ("sorting",)),
    ("Power of Two", "Easy", ("recursion", "math")),
    ("Merge Two Sorted Lists", "Easy", ("recursion", "linked-lists")),
    ("Range Sum of BST", "Easy", ("recursion", "trees")),
    ("Permutations", "Medium", ("recursion",)),
    ("Subsets", "Medium", ("recursion",)),
    ("Generate Parentheses", "Medium", ("recursion", "strings")),
    ("N-Queens", "Hard", ("recursion",)),
    ("Sudoku Solver", "Hard", ("recursion",)),
    ("Word Search II", "Hard", ("recursion", "trees", "strings")),
    ("Reverse Linked List", "Easy", ("linked-lists", "recursion")),
    ("Linked List Cycle", "Easy", ("linked-lists",)),
    ("Middle of the Linked List", "Easy", ("linked-lists",)),
    ("Add Two Numbers", "Medium", ("linked-lists", "math")),
    ("Remove Nth Node From End of List", "Medium", ("linked-lists",)),
    ("Copy List with Random Pointer", "Medium", ("linked-lists", "hash-tables")),
    ("Merge k Sorted Lists", "Hard", ("linked-lists", "sorting")),
    ("Reverse Nodes in k-Group", "Hard", ("linked-lists", "recursion")),
    ("Sort List in Constant Space", "Hard", ("linked-lists", "sorting")),
    ("Palindrome Number", "Easy", ("math",)),
    ("Roman to Integer", "Easy", ("math", "strings")),
    ("Add Digits", "Easy", ("math",)),
    ("Pow(x, n)", "Medium", ("math", "recursion")),
    ("Multiply Strings", "Medium", ("math", "strings")),
    ("Count Primes", "Medium", ("math", "arrays")),
    ("Basic Calculator", "Hard", ("math", "strings")),
    ("Permutation Sequence", "Hard", ("math", "recursion")),
    ("Number of Digit One", "Hard", ("math", "dynamic-programming")),
    ("Assign Cookies", "Easy", ("greedy", "sorting")),
    ("Lemonade Change", "Easy", ("greedy",)),
    ("Maximum Units on a Truck", "Easy", ("greedy", "sorting")),
    ("Jump Game", "Medium", ("greedy", "arrays")),
    ("Gas Station", "Medium", ("greedy", "arrays")),
    ("Task Scheduler", "Medium", ("greedy", "hash-tables")),
    ("Candy", "Hard", ("greedy", "arrays")),
    ("Minimum Number of Refueling Stops", "Hard", ("greedy", "dynamic-programming")),
    ("IPO", "Hard", ("greedy", "sorting")),
    ("Binary Search", "Easy", ("binary-search", "arrays")),
    ("Search Insert Position", "Easy", ("binary-search", "arrays")),
    ("First Bad Version", "Easy", ("binary-search",)),
    ("Search in Rotated Sorted Array", "Medium", ("binary-search", "arrays")),
    ("Find Peak Element", "Medium", ("binary-search",)),
    ("Koko Eating Bananas", "Medium", ("binary-search",)),
    ("Median of Two Sorted Arrays", "Hard", ("binary-search", "arrays")),
    ("Split Array Largest Sum", "Hard", ("binary-search", "dynamic-programming", "greedy")),
    ("Find K-th Smallest Pair Distance", "Hard", ("binary-search", "sorting")),
)
