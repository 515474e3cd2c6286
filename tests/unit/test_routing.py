from services.stt.routing import room_route, solo_route, translate_work
from shared.messages import Listener


def test_solo_session_hears_itself_in_target_language():
    route = solo_route("me", "es", 24000, None)
    work = translate_work(route, "me", "u1", "hello", "en")
    assert route.captions_to == ("me",)
    assert [(w.target_language, [l.sid for l in w.listeners]) for w in work] == [("es", ["me"])]


def test_room_groups_listeners_by_language_and_skips_same_language():
    members = [Listener("a", "en"), Listener("b", "es"), Listener("c", "es", 8000), Listener("d", "en"),
               Listener("e", "ca")]
    route = room_route("a", members)
    assert route.captions_to == ("a", "b", "c", "d", "e")
    work = translate_work(route, "a", "u1", "hello", "en")
    assert [(w.target_language, sorted(l.sid for l in w.listeners)) for w in work] == [
        ("ca", ["e"]), ("es", ["b", "c"])]


def test_room_of_one_needs_no_translation():
    route = room_route("a", [Listener("a", "en")])
    assert translate_work(route, "a", "u1", "hi", "en") == []


def test_speaker_not_yet_in_member_list_still_gets_captions():
    route = room_route("a", [Listener("b", "es")])
    assert route.captions_to == ("a", "b")
