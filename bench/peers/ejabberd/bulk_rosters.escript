#!/usr/bin/env escript
%% The presence scenario's rosters for the benchmark's ejabberd node.
%%
%% usage (from server.sh): ERL_FLAGS="..." bulk_rosters.escript NODE COOKIE
%%                         DOMAIN PREFIX USERS CONTACTS [star]
%%
%% star: the pep scenario's rosters instead, user 0 (the publisher) and each
%% of users 1..USERS-1, subscription both.
%%
%% User i (0-based; account PREFIX<i+1>) gets the CONTACTS/2 users on either
%% side of it on a ring of USERS as contacts with subscription both, as
%% natter-load's presence --setup-rosters leaves them (CONTACTS rounded up to
%% even and kept below USERS, as natter-load does). The items are written
%% into mod_roster's mnesia table 'roster' in chunks, after checking that
%% the table has the fields this writes.

-define(FIELDS, [usj, us, jid, name, subscription, ask, groups, askmessage, xs]).

main([Node0, Cookie, Domain, Prefix, Users0, Contacts0]) ->
    main([Node0, Cookie, Domain, Prefix, Users0, Contacts0, "ring"]);
main([Node0, Cookie, Domain, Prefix, Users0, Contacts0, Layout]) ->
    Node = list_to_atom(Node0),
    N = list_to_integer(Users0),
    R = contacts(list_to_integer(Contacts0), N),
    Self = list_to_atom("rosters" ++ os:getpid() ++ "@localhost"),
    {ok, _} = net_kernel:start([Self, shortnames]),
    erlang:set_cookie(node(), list_to_atom(Cookie)),
    case rpc:call(Node, mnesia, table_info, [roster, attributes]) of
        ?FIELDS -> ok;
        Other ->
            io:format(standard_error, "unexpected roster table: ~p~n", [Other]),
            halt(1)
    end,
    Host = list_to_binary(Domain),
    Name = fun(I) -> list_to_binary(Prefix ++ integer_to_list(I + 1)) end,
    Items = case Layout of
                %% The pep scenario: user 0 and each of users 1..N-1.
                "star" ->
                    lists:append([[item(Name(0), Name(V), Host), item(Name(V), Name(0), Host)]
                                  || V <- lists:seq(1, N - 1)]);
                _ ->
                    [item(Name(U), Name(V), Host)
                     || U <- lists:seq(0, N - 1),
                        D <- lists:seq(1, R div 2),
                        V <- [(U + D) rem N, (U - D + N) rem N]]
            end,
    write(Node, Items),
    io:format("~b roster items (~b contacts each)~n", [length(Items), R]);
main(_) ->
    io:format(standard_error,
              "usage: bulk_rosters.escript NODE COOKIE DOMAIN PREFIX USERS CONTACTS~n", []),
    halt(2).

contacts(R0, N) ->
    R = R0 + (R0 band 1),
    if
        N < 2 -> 0;
        R > N - 1 -> (N - 1) band (bnot 1);
        true -> R
    end.

item(User, Contact, Host) ->
    Jid = {Contact, Host, <<>>},
    {roster, {User, Host, Jid}, {User, Host}, Jid, <<>>, both, none, [], <<>>, []}.

write(_Node, []) ->
    ok;
write(Node, Items) ->
    {Chunk, Rest} = lists:split(min(10000, length(Items)), Items),
    ok = rpc:call(Node, lists, foreach, [fun mnesia:dirty_write/1, Chunk]),
    write(Node, Rest).
