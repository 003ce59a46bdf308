"""API tokens through GraphQL: a token that leaks must be revoked by its owner at once, without an
operator (before, only the CLI could issue tokens and nothing could revoke one)."""

from __future__ import annotations

MINE = "query($account: String) { myTokens(account: $account) { id name lastUsedAt revoked } }"
CREATE = """mutation($name: String!, $account: String) {
  createToken(name: $name, account: $account) { id name secret } }"""
REVOKE = "mutation($id: ID!) { revokeToken(id: $id) { id name revoked } }"


async def test_owners_issue_list_and_revoke_their_tokens(api) -> None:
    first = await api.account("alice", "requester")
    laptop = (await api.data(CREATE, {"name": "laptop"}, first))["createToken"]
    assert laptop["name"] == "laptop" and laptop["secret"].startswith("mlr_")
    assert (await api.data("{ me { name } }", token=laptop["secret"]))["me"]["name"] == "alice"

    tokens = (await api.data(MINE, token=laptop["secret"]))["myTokens"]
    assert [t["name"] for t in tokens] == ["laptop", "default"]  # newest first; never a secret
    assert all(t["lastUsedAt"] and not t["revoked"] for t in tokens)
    assert "secret" not in str(tokens) and first not in str(tokens)

    revoked = (await api.data(REVOKE, {"id": tokens[1]["id"]}, laptop["secret"]))["revokeToken"]
    assert revoked == {"id": tokens[1]["id"], "name": "default", "revoked": True}
    assert await api.error_code("{ me { name } }", token=first) == "UNAUTHENTICATED"
    assert (await api.data(MINE, token=laptop["secret"]))["myTokens"][1]["revoked"] is True


async def test_only_admins_reach_other_accounts_tokens(api) -> None:
    alice = await api.account("alice", "requester")
    bob = await api.account("bob", "producer")
    root = await api.account("root", "admin")
    alices = (await api.data(MINE, token=alice))["myTokens"]

    assert await api.error_code(REVOKE, {"id": alices[0]["id"]}, bob) == "NOT_FOUND"  # like no token
    for query, variables in ((MINE, {}), (CREATE, {"name": "x"})):  # another's: NOT_FOUND, like no one's
        refusals = [
            (await api.gql(query, {**variables, "account": name}, bob))["errors"][0]
            for name in ("alice", "nobody")
        ]
        assert [error["extensions"]["code"] for error in refusals] == ["NOT_FOUND", "NOT_FOUND"]
        assert refusals[0]["message"].replace("alice", "nobody") == refusals[1]["message"]
    assert len((await api.data(MINE, {"account": "BOB"}, bob))["myTokens"]) == 1  # one's own, by name
    for query, variables in ((MINE, {}), (CREATE, {"name": "x"}), (REVOKE, {"id": alices[0]["id"]})):
        assert await api.error_code(query, variables) == "UNAUTHENTICATED"

    issued = (await api.data(CREATE, {"name": "support", "account": "alice"}, root))["createToken"]
    newest = (await api.data(MINE, {"account": "alice"}, root))["myTokens"][0]
    assert newest["name"] == "support"
    assert (await api.data(REVOKE, {"id": issued["id"]}, root))["revokeToken"]["revoked"] is True
    assert await api.error_code(MINE, {"account": "nobody"}, root) == "NOT_FOUND"
