# nbagent tools: the base of the tool classes below (nbagent's Tool, reduced to what runs here):
# setup() runs once, before the first call; a call runs forward().
class Tool:
    name = ""
    description = ""

    def setup(self):
        pass

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} defines no forward()")

    def __call__(self, *args, **kwargs):
        if not self.__dict__.get("_nbagent_set_up"):
            self.setup()
            self._nbagent_set_up = True
        return self.forward(*args, **kwargs)
